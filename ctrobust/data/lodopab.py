"""Convert LoDoPaB-CT ground-truth HDF5 files into the prepared-slice format.

LoDoPaB-CT (Leuschner et al. 2021, zenodo record 3384092) ships ``ground_truth_{train,validation,test}_NNN.hdf5``
files, each with a dataset ``data`` of shape ``(n, 362, 362)`` (128 slices per file, fewer in the last)
float32 in [0, 1] on a 26 cm x 26 cm domain. Values are linear attenuation divided by
``MU_MAX = 81.35858 / m`` (3071 HU), with ``MU_WATER = 20 / m`` and ``MU_AIR = 0.02 / m``, so
``HU = (x * MU_MAX - MU_WATER) * 1000 / (MU_WATER - MU_AIR)``. LoDoPaB's own patient split (from
LIDC-IDRI) is kept: train -> train, validation -> val, test -> test. Optional files
``patient_ids_rand_{part}.csv`` (one anonymous patient number per slice, from the same record) give the
patient keys; without them every slice is its own "patient" key (the parts are patient-disjoint anyway).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from ctrobust.data.dicom import apply_window, parse_window
from ctrobust.data.store import SliceWriter, atomic_output
from ctrobust.errors import CtrobustError

__all__ = ["convert_lodopab", "lodopab_to_hu", "MU_MAX", "MU_WATER", "MU_AIR", "PARTS", "NATIVE_SIZE", "DOMAIN_MM"]

MU_WATER = 20.0
MU_AIR = 0.02
MU_MAX = 3071 * (MU_WATER - MU_AIR) / 1000 + MU_WATER  # 81.35858 per metre
PARTS = {"train": "train", "validation": "val", "test": "test"}
NATIVE_SIZE = 362
DOMAIN_MM = 260.0


def lodopab_to_hu(x: np.ndarray) -> np.ndarray:
    """LoDoPaB ground-truth values (attenuation / MU_MAX, in [0, 1]) -> HU (float64)."""
    return (np.asarray(x, dtype=np.float64) * MU_MAX - MU_WATER) * 1000.0 / (MU_WATER - MU_AIR)


def _files(source: Path, part: str) -> list[Path]:
    pattern = re.compile(rf"ground_truth_{part}_(\d+)\.hdf5$")
    found = [(int(m.group(1)), p) for p in source.iterdir() if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def _patient_ids(source: Path, part: str):
    path = source / f"patient_ids_rand_{part}.csv"
    if not path.is_file():
        return None
    return [int(float(line.split(",")[0])) for line in path.read_text().split() if line.strip()]


def convert_lodopab(source: str | os.PathLike, out: str | os.PathLike, *, size: int = NATIVE_SIZE,
                    window: str = "native", max_per_part: int | None = None, force: bool = False,
                    progress: bool | None = None) -> dict:
    """Convert a folder of LoDoPaB-CT ground-truth files into one prepared-slice file.

    Parameters
    ----------
    source : path-like
        Folder holding ``ground_truth_{train,validation,test}_NNN.hdf5`` (and optionally
        ``patient_ids_rand_{part}.csv``).
    out : path-like
        Output HDF5 file (atomic write; refused if it exists unless ``force``).
    size : int
        N, output side in pixels (362 keeps LoDoPaB's grid; otherwise anti-aliased resize).
    window : str
        ``"native"`` keeps LoDoPaB's [0, 1] scaling (attenuation / MU_MAX); a preset or ``"LEVEL,WIDTH"``
        converts to HU first and windows like ``prepare-dicom``.
    max_per_part : int or None
        Keep at most this many slices per part (the first ones), for quick experiments.

    Returns
    -------
    dict
        ``{"out", "counts": {split: n}, "files": {part: n_files}}``.
    """
    import h5py
    from skimage.transform import resize
    from ctrobust.progress import tqdm  # bars only on a terminal

    source = Path(source)
    if not source.is_dir():
        raise CtrobustError(f"LoDoPaB folder {source} does not exist")
    files = {part: _files(source, part) for part in PARTS}
    if not any(files.values()):
        raise CtrobustError(f"no ground_truth_{{train,validation,test}}_NNN.hdf5 files in {source}; download "
                            "the LoDoPaB-CT ground truth zips from zenodo record 3384092 and unzip them there")
    if window == "native":
        win = None
    else:
        try:
            win = parse_window(window)
        except ValueError as exc:
            raise CtrobustError(str(exc)) from None
    if progress is None:
        progress = sys.stderr.isatty()
    total = sum(1 for fs in files.values() for _ in fs)
    with atomic_output(out, force=force) as tmp, h5py.File(tmp, "w") as f:
        writer = SliceWriter(f, size)
        bar = tqdm(total=total, desc="LoDoPaB files", unit="file", disable=not progress)
        for part, split in PARTS.items():
            ids = _patient_ids(source, part)
            index = 0
            for path in files[part]:
                if max_per_part is not None and index >= max_per_part:
                    break
                with h5py.File(path, "r") as src:
                    if "data" not in src or src["data"].ndim != 3:
                        raise CtrobustError(f"{path.name} has no (n, H, W) dataset 'data': "
                                            "not a LoDoPaB ground-truth file")
                    data = src["data"]
                    n = data.shape[0] if max_per_part is None else min(data.shape[0], max_per_part - index)
                    for start in range(0, n, 32):
                        block = np.asarray(data[start:min(start + 32, n)], dtype=np.float64)
                        if block.shape[1:] != (size, size):
                            block = np.stack([resize(b, (size, size), order=1, anti_aliasing=True,
                                                     preserve_range=True) for b in block])
                        images = (np.clip(block, 0.0, 1.0) if win is None
                                  else apply_window(lodopab_to_hu(block), win[1], win[2]))
                        k = images.shape[0]
                        rows = range(index + start, index + start + k)
                        if ids is not None and len(ids) >= rows.stop:
                            keys = [f"{split}-p{ids[r]:06d}" for r in rows]
                        else:
                            keys = [f"{split}-s{r:07d}" for r in rows]
                        writer.append(split, images, keys, keys, None, np.full(k, DOMAIN_MM / size))
                    index += n
                bar.update()
        bar.close()
        counts = writer.finish({
            "source": "lodopab",
            "description": "LoDoPaB-CT ground truth converted by ctrobust.data.lodopab",
            "window": "native (attenuation / MU_MAX)" if win is None else win[0],
            "window_level": float("nan") if win is None else win[1],
            "window_width": float("nan") if win is None else win[2],
            "fov_mm": DOMAIN_MM,
        })
    return {"out": str(out), "counts": counts, "files": {p: len(v) for p, v in files.items()}}
