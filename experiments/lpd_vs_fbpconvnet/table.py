"""Collect the attack folders of run.sh into one table: relative error clean / random / attacked per model and eps,
the attack's convergence and restart spread, and each network's training wall time and step time.

    python -m experiments.lpd_vs_fbpconvnet.table RUN_DIR OUT.csv

Writes ``OUT.csv``, ``training.csv`` beside it (steps, seconds, last validation error per run) and ``OUT.json``
(both tables and the acquisition / attack settings of the attack folders' ``summary.json``: what was measured).
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


def best_of_runs(folders) -> list[dict]:
    """Rows like :func:`comparison_rows` from separate single-restart attack folders (one eps and one seed each):
    per sample and eps the worst case is the largest squared error over the runs (what ``--restarts`` does in one
    process); mean and (population) std of its relative error over the samples."""
    import math

    best: dict[tuple, dict] = {}
    clean: dict[tuple, float] = {}
    runs: dict[tuple, set] = {}
    for folder in folders:
        for r in read_csv(Path(folder) / "samples.csv"):
            key = (r["model"], float(r["eps"]), int(r["sample"]))
            if r["condition"] == "attack" and float(r["eps"]) > 0:
                runs.setdefault(key[:2], set()).add(str(folder))
            if r["condition"] == "clean":
                clean[(r["model"], int(r["sample"]))] = float(r["relative_error"])
            if r["condition"] == "attack" and float(r["eps"]) > 0:
                if key not in best or float(r["sq_error"]) > float(best[key]["sq_error"]):
                    best[key] = r
    rows = []
    for model, eps in sorted({(m, e) for m, e, _ in best}):
        errs = [float(r["relative_error"]) for (m, e, _), r in sorted(best.items()) if (m, e) == (model, eps)]
        cl = [v for (m, _), v in sorted(clean.items()) if m == model]
        mean = sum(errs) / len(errs)
        rows.append({"model": model, "eps": eps, "n": len(errs), "rel_err_clean": round(sum(cl) / len(cl), 4),
                     "rel_err_attack": round(mean, 4),
                     "rel_err_attack_std": round(math.sqrt(sum((e - mean) ** 2 for e in errs) / len(errs)), 4),
                     "runs": len(runs[(model, eps)])})
    return rows


RUNS = ("fbpconvnet_plain", "fbpconvnet_minmax", "lpd_plain", "lpd_minmax", "lpdfbp_plain")


def training_rows(run: Path) -> list[dict]:
    """Per training run: steps, seconds in the steps (sum and median of ``steps.csv``), last validation error."""
    rows = []
    for name in RUNS:
        if not (run / name / "steps.csv").is_file():
            continue
        steps = read_csv(run / name / "steps.csv")
        seconds = sorted(float(r["seconds"]) for r in steps)
        val = read_csv(run / name / "validation.csv")[-1]
        rows.append({"run": name, "steps": len(steps), "train_seconds": round(sum(seconds), 1),
                     "median_step_s": round(seconds[len(seconds) // 2], 3),
                     "val_relative_error": round(float(val["val_relative_error"]), 4),
                     "val_psnr": round(float(val["val_psnr"]), 2)})
    return rows


def settings(run: Path) -> dict:
    """The ``config`` of each attack folder's summary.json (geometry, noise, attack settings)."""
    out = {}
    for folder in FOLDERS:
        path = run / folder / "summary.json"
        if path.is_file():
            out[folder] = json.loads(path.read_text())["config"]
    for path in sorted(run.glob("split*/*/summary.json")):
        out[f"{path.parent.parent.name}/{path.parent.name}"] = json.loads(path.read_text())["config"]
    return out


def main(argv=None) -> list[dict]:
    run, out = (Path(a) for a in (argv if argv is not None else sys.argv[1:]))
    rows = comparison_rows(run)
    split = sorted(run.glob("split*/*/samples.csv"))  # separate single-restart runs (one eps and seed each)
    rows += best_of_runs([p.parent for p in split])
    write_csv(rows, out)
    training = training_rows(run)
    write_csv(training, out.with_name("training.csv"))
    write_json({"rows": rows, "training": training, "attacks": settings(run)}, out.with_suffix(".json"))
    return rows


if __name__ == "__main__":
    main()
