"""Run logs (CSV + JSONL, appended per row) and the training-data fingerprint."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from ctrobust.files import atomic_write, write_text

__all__ = ["RunLog", "data_fingerprint"]


def _clean(value):
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLog:
    """Append-only logs ``<name>.jsonl`` and ``<name>.csv`` in a run directory.

    The CSV header is fixed by the first row of a file; later keys it lacks are dropped from the CSV
    (the JSONL keeps every key).
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)

    def append(self, name: str, row: dict) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        with open(self.out / f"{name}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        path = self.out / f"{name}.csv"
        header = None
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
        with open(path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=header or list(row), extrasaction="ignore")
            if header is None:
                writer.writeheader()
            writer.writerow(row)

    def write_json(self, name: str, obj) -> None:
        write_text(self.out / name, json.dumps(obj, indent=2, default=str))

    def truncate(self, step: int) -> None:
        """Drop rows logged after ``step`` (rows of a killed run's steps that a resume will redo)."""
        for path in self.out.glob("*.jsonl"):
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            keep = [r for r in rows if int(r.get("step", 0)) <= step]
            if len(keep) == len(rows):
                continue
            write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
            csv_path = path.with_suffix(".csv")
            if csv_path.exists():
                with open(csv_path, newline="", encoding="utf-8") as fh:
                    reader = csv.DictReader(fh)
                    header = reader.fieldnames or []
                    kept = [r for r in reader if r.get("step") in (None, "") or int(float(r["step"])) <= step]
                def write(tmp, header=header, kept=kept):
                    with open(tmp, "w", newline="", encoding="utf-8") as fh:
                        writer = csv.DictWriter(fh, fieldnames=header)
                        writer.writeheader()
                        writer.writerows(kept)

                atomic_write(csv_path, write)


def data_fingerprint(dataset, samples: int = 8) -> dict:
    """``{"type", "n", "item_shape", "sha256"}``: the length, and a hash of up to ``samples`` evenly spaced items.

    Enough to notice that a resumed run is fed other data; paths are not part of it (a moved file
    still matches).
    """
    n = len(dataset)
    h = hashlib.sha256()
    shape = None
    if n:
        for i in sorted({int(round(j)) for j in np.linspace(0, n - 1, min(samples, n))}):
            item = dataset[i]
            item = item[0] if isinstance(item, (list, tuple)) else item
            t = torch.as_tensor(item).detach().cpu().contiguous()
            shape = list(t.shape)
            h.update(str(i).encode())
            h.update(t.numpy().tobytes())
    return {"type": type(dataset).__name__, "n": n, "item_shape": shape, "sha256": h.hexdigest()[:32]}
