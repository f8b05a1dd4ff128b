"""What every experiment runner shares: the command line, configs, the output folder, atomic writes.

Every runner is called as ``python -m experiments.<name>.run [--quick] [--out DIR] [--force]
[--config FILE] [--set KEY=VALUE ...] [--threads N] [--no-progress]``:

- the configuration is ``experiments/<name>/config.json``: its top-level keys are the full-run settings,
  its ``"quick"`` entry holds the overrides applied by ``--quick``; ``--config`` reads another file of the
  same form and ``--set key=value`` overrides single keys (value parsed as JSON when it parses);
- results go to ``--out`` (default ``results/<name>``); an existing non-empty folder is refused unless
  ``--force`` (files are then overwritten one by one, never the whole folder removed);
- every file is written atomically (:func:`ctrobust.files.write_bytes`), so an interrupted run never
  leaves a half-written table or figure under its final name;
- the resolved configuration and the run's wall time go into ``config.json`` in the output folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ctrobust.errors import CtrobustError
from ctrobust.files import prepare_output_dir, write_bytes, write_text

__all__ = [
    "EXPERIMENTS_DIR",
    "build_parser",
    "load_config",
    "write_json",
    "write_csv",
    "save_figure",
    "run_main",
    "pyplot",
]

EXPERIMENTS_DIR = Path(__file__).resolve().parent


# -- command line ---------------------------------------------------------------------------------------
def build_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The parser every runner uses; ``name`` is the experiment folder's name."""
    p = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}.run",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # as the ctrobust CLI: a shortened option is an error, not silently another one
    )
    p.add_argument("--quick", action="store_true",
                   help="apply the config's 'quick' overrides: a smaller run (< 1 minute on one CPU core) "
                        "that checks the pipeline, not the science")
    p.add_argument("--out", type=Path, default=Path("results") / name,
                   help="output folder for the figure (PNG), the tables (CSV + JSON) and the resolved config")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it already holds files (they are overwritten)")
    p.add_argument("--config", type=Path, default=EXPERIMENTS_DIR / name / "config.json",
                   help="JSON config: top-level keys are the full run, the 'quick' entry the --quick overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (VALUE parsed as JSON if possible); repeatable")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (number); default: torch's own choice")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")
    return p


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(path: Path, *, quick: bool = False, overrides: Sequence[str] = ()) -> dict:
    """Read a runner config: full settings, ``quick`` overrides applied on request, then ``KEY=VALUE`` ones.

    Unknown override keys are refused so a typo cannot silently run the default experiment.
    """
    path = Path(path)
    if not path.is_file():
        raise CtrobustError(f"config file {path} not found; pass --config with a JSON file")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CtrobustError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CtrobustError(f"config file {path} must hold a JSON object")
    quick_part = raw.pop("quick", {})
    raw.pop("_comment", None)
    config = dict(raw)
    if quick:
        for key, value in quick_part.items():
            if key not in config:
                raise CtrobustError(f"{path}: quick override {key!r} is not a config key")
            config[key] = value
    for item in overrides:
        if "=" not in item:
            raise CtrobustError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in config:
            raise CtrobustError(f"--set {key}: unknown config key; known keys: {', '.join(sorted(config))}")
        config[key] = _parse_value(value)
    config["quick"] = bool(quick)
    return config


# -- output folder and atomic writes ----------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """Numbers, tensors and arrays -> plain JSON values (NaN/Inf -> None: JSON has no such numbers)."""
    try:
        import numpy as np
        import torch
    except ImportError:  # pragma: no cover
        np = torch = None  # type: ignore
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if torch is not None and isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if np is not None and isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if np is not None and isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """One row per mapping; columns default to the keys in first-seen order."""
    rows = [dict(r) for r in rows]
    if columns is None:
        columns = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in columns})
    return write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    v = _jsonable(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 130) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return write_bytes(path, buf.getvalue())


# -- the whole run --------------------------------------------------------------------------------------
def run_main(name: str, description: str, body: Callable[[dict, Path, argparse.Namespace], dict],
             argv: Sequence[str] | None = None,
             extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Parse the command line, prepare ``--out``, run ``body(config, out, args) -> summary`` and record it.

    Returns the exit status: 0 on success, 1 with a message on a user error (``CtrobustError``).
    """
    parser = build_parser(name, description)
    if extra_args is not None:
        extra_args(parser)
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            import torch

            torch.set_num_threads(max(1, args.threads))
        config = load_config(args.config, quick=args.quick, overrides=args.overrides)
        out = prepare_output_dir(args.out, args.force)
        args.progress = bool(args.progress and sys.stderr.isatty())
        t0 = time.perf_counter()
        summary = body(config, out, args) or {}
        wall = time.perf_counter() - t0
        write_json(out / "config.json", {"experiment": name, "config": config, "wall_time_s": round(wall, 2)})
    except CtrobustError as exc:
        from ctrobust.cli import flag_spelling

        print(f"experiments.{name}: error: {flag_spelling(str(exc))}", file=sys.stderr)
        return exc.exit_code if hasattr(exc, "exit_code") else 1
    except KeyboardInterrupt:
        print(f"experiments.{name}: interrupted", file=sys.stderr)
        return 130
    print(f"experiments.{name}: done in {wall:.1f} s; results in {out}")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    return 0
