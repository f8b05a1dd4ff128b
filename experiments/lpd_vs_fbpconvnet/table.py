"""Collect the attack folders of run.sh into one table: relative error clean / random / attacked per model and eps,
the attack's convergence and restart spread, and each network's training wall time and step time.

    python -m experiments.lpd_vs_fbpconvnet.table RUN_DIR OUT.csv

Writes ``OUT.csv`` and, beside it, ``OUT.json`` (the rows and the acquisition / attack settings of the
attack folders' ``summary.json``: what was measured).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ctrobust.evaluation.report import read_csv, write_csv, write_json

FOLDERS = ("attack_fbpconvnet", "attack_lpd_plain", "attack_lpd_minmax", "attack_lpdfbp_plain")


def comparison_rows(run: Path) -> list[dict]:
    """One row per (model, eps): clean, random and attacked relative errors (mean and std over samples)."""
    rows: dict[tuple, dict] = {}
    for folder in FOLDERS:
        path = run / folder / "summary.csv"
        if not path.is_file():
            continue
        for r in read_csv(path):
            key = (r["model"], float(r["eps"]))
            row = rows.setdefault(key, {"model": r["model"], "eps": float(r["eps"]), "n": int(r["n"])})
            cond = r["condition"]
            row[f"rel_err_{cond}"] = round(float(r["relative_error_mean"]), 4)
            row[f"rel_err_{cond}_std"] = round(float(r["relative_error_std"]), 4)
            if cond == "attack":
                for k in ("converged_mean", "restart_spread_mean"):
                    if r.get(k) not in (None, ""):
                        row[k.replace("_mean", "")] = round(float(r[k]), 4)
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1]))]


def settings(run: Path) -> dict:
    """The ``config`` of each attack folder's summary.json (geometry, noise, attack settings)."""
    out = {}
    for folder in FOLDERS:
        path = run / folder / "summary.json"
        if path.is_file():
            out[folder] = json.loads(path.read_text())["config"]
    return out


def main(argv=None) -> list[dict]:
    run, out = (Path(a) for a in (argv if argv is not None else sys.argv[1:]))
    rows = comparison_rows(run)
    write_csv(rows, out)
    write_json({"rows": rows, "attacks": settings(run)}, out.with_suffix(".json"))
    return rows


if __name__ == "__main__":
    main()
