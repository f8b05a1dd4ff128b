"""CT with 143 views: FBPConvNet trained plainly, with weight decay, Parseval and min-max, attacked by PGA.

``python -m experiments.ct_143views.run [--quick] [--data DATASET.h5] [--out DIR] [--force]`` (see README.md).

One command from data to report, through the ``ctrobust`` command line (``ctrobust.cli.main``):

1. data: ``--data`` (a file written by ``ctrobust prepare-dicom``, e.g. the paper's 884 / 221 slices) or,
   without it, ``ctrobust make-phantoms`` writes built-in phantoms to ``OUT/data/phantoms.h5``;
2. ``ctrobust train`` once per objective into ``OUT/runs/<objective>/`` (143 views on [0, pi));
3. ``ctrobust attack`` on the test split with every ``best.pt`` (FBP as the reference) into ``OUT/attack/``;
4. ``ctrobust report OUT/attack`` into ``OUT/report.md``;
5. ``OUT/figure.png`` (error / PSNR vs eps, one line per objective) and ``OUT/table.csv`` + ``table.json``
   (one row per model, eps and condition), built from ``OUT/attack/summary.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ctrobust.cli import main as ctrobust_main
from ctrobust.errors import CtrobustError
from ctrobust.report import plot_robustness_curves
from experiments import _common as C

NAME = "ct_143views"
METRICS = ("relative_error", "mse", "psnr", "ssim", "sq_error")


def _cli(argv: list[str]) -> None:
    """Run one ``ctrobust`` command; a non-zero exit becomes a CtrobustError naming the command."""
    print("+ ctrobust " + " ".join(argv), file=sys.stderr, flush=True)
    code = ctrobust_main(argv)
    if code != 0:
        raise CtrobustError(f"'ctrobust {' '.join(argv)}' failed with exit status {code} (its message is above)")


def commands(cfg: dict, out: Path, data: str | None, force: bool, progress: bool) -> list[list[str]]:
    """The ``ctrobust`` command lines this experiment runs, in order (also written to ``commands.txt``)."""
    quiet = [] if progress else ["--no-progress"]
    again = ["--force"] if force else []
    cmds = []
    if data is None:
        data = str(out / "data" / "phantoms.h5")
        cmds.append(["make-phantoms", "--out", data, "--n", str(cfg["n_phantoms"]), "--size", str(cfg["size"]),
                     "--seed", str(cfg["phantom_seed"]), *quiet, *again])
    for obj in cfg["objectives"]:
        cmds.append(["train", "--angles", str(cfg["angles"]), "--data", data, "--objective", obj,
                     "--eps", str(cfg["eps_train"]), "--lam", str(cfg["lam"]), "--g-lr", str(cfg["g_lr"]),
                     "--g-steps", str(cfg["g_steps"]), "--mu", str(cfg["mu"]), "--beta", str(cfg["beta"]),
                     "--max-steps", str(cfg["max_steps"]), "--batch-size", str(cfg["batch_size"]),
                     "--lr", str(cfg["lr"]), "--channels", str(cfg["channels"]), "--depth", str(cfg["depth"]),
                     "--seed", str(cfg["seed"]), "--device", cfg["device"], "--out", str(out / "runs" / obj),
                     *quiet, *again])
    attack = ["attack"]
    for obj in cfg["objectives"]:
        attack += ["--checkpoint", str(out / "runs" / obj / "best.pt")]
    attack += ["--data", data, "--split", "test", "--n-samples", str(cfg["attack_samples"]),
               "--eps-grid", ",".join(f"{e:g}" for e in cfg["eps_grid"]), "--steps", str(cfg["attack_steps"]),
               "--restarts", str(cfg["attack_restarts"]), "--device", cfg["device"], "--out", str(out / "attack"),
               *quiet, *again]
    cmds.append(attack)
    cmds.append(["report", str(out / "attack"), "--out", str(out / "report.md"), *again])
    return cmds


def summarize(out: Path) -> tuple[list[dict], dict]:
    """``(table rows, {label: summary rows})`` from ``OUT/attack/summary.json``."""
    summary = json.loads((out / "attack" / "summary.json").read_text())["summary"]
    table, per_model = [], {}
    for r in summary:
        label = r["model"]
        per_model.setdefault(label, []).append(r)
        row = {"model": label, "eps": r["eps"], "condition": r["condition"], "n": r.get("n")}
        for k in METRICS:
            for stat in ("mean", "std"):
                if f"{k}_{stat}" in r:
                    row[f"{k}_{stat}"] = r[f"{k}_{stat}"]
        table.append(row)
    return table, per_model


def body(cfg: dict, out: Path, args) -> dict:
    data = args.data
    if data is not None and not Path(data).is_file():
        raise CtrobustError(f"--data {data} is not a file; write one with 'ctrobust prepare-dicom DICOM_DIR --out ct.h5'")
    cmds = commands(cfg, out, data, args.force, args.progress)
    if data is None:
        (out / "data").mkdir(exist_ok=True)
    write_text(out / "commands.txt", "\n".join("ctrobust " + " ".join(c) for c in cmds) + "\n")
    for c in cmds:
        _cli(c)
    table, per_model = summarize(out)
    C.write_csv(out / "table.csv", table)
    C.write_json(out / "table.json", table)
    # checkpoint labels are paths; name the lines by objective (FBP stays the reference)
    labels = {}
    for label in per_model:
        obj = next((o for o in cfg["objectives"] if f"{Path('runs') / o}" in label or label == o), None)
        labels[label] = obj or label
    plot_robustness_curves({labels[k]: v for k, v in per_model.items()}, out / "figure.png",
                           metrics=("relative_error", "psnr"), reference=("FBP", "fbp"),
                           title=f"FBPConvNet, {cfg['angles']} views: PGA vs random noise")
    eps_max = max(cfg["eps_grid"])
    head = {}
    for r in table:
        if r["eps"] == eps_max and r["condition"] in ("clean", "attack"):
            head.setdefault(labels[r["model"]], []).append(f"{r['condition']} rel. err {r['relative_error_mean']:.4f}")
    return {k: ", ".join(v) for k, v in head.items()}


def _extra(parser) -> None:
    parser.add_argument("--data", default=None, metavar="DATASET.h5",
                        help="prepared-slice HDF5 file from 'ctrobust prepare-dicom' (train/val/test splits); "
                             "default: built-in phantoms written by 'ctrobust make-phantoms' into OUT/data/")


def main(argv=None) -> int:
    return C.run_main(NAME, __doc__.splitlines()[0], body, argv, extra_args=_extra)


if __name__ == "__main__":
    sys.exit(main())
