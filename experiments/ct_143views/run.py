"""CT with 143 views: FBPConvNet trained plainly, with weight decay, Parseval and min-max, attacked by APGD.

``python -m experiments.ct_143views.run [--quick] [--data DATASET.h5] [--out DIR] [--force]`` (see README.md).

One command from data to report, through the application layer (the specs and ``run_*`` functions of
:mod:`ctrobust.app`, exactly what the ``ctrobust`` commands run; ``OUT/commands.txt`` lists the equivalent
command lines):

1. data: ``--data`` (a file written by ``ctrobust prepare-dicom``, e.g. the paper's 884 / 221 slices) or,
   without it, ``run_make_phantoms`` (``ctrobust make-phantoms``) writes built-in phantoms to
   ``OUT/data/phantoms.h5``;
2. ``run_train`` (``ctrobust train``) once per objective into ``OUT/runs/<objective>/`` (143 views on [0, pi));
3. ``run_attack`` (``ctrobust attack``) on the test split with every ``best.pt`` (FBP as the reference) into
   ``OUT/attack/``;
4. with ``real_shift``: ``run_evaluate`` (``ctrobust evaluate --shift data --shift-data real --ttt``) of every
   ``best.pt`` from the test phantoms to the real CT slices shipped with pydicom, plain and with test-time
   training, into ``OUT/shift_real/`` (a handful of slices: an evaluation set, not a training set);
5. ``run_report`` (``ctrobust report OUT/attack [OUT/shift_real]``) into ``OUT/report.md``;
6. ``OUT/figure.png`` (error / PSNR vs eps, one line per objective) and ``OUT/table.csv`` + ``table.json``
   (one row per model, eps and condition), built from ``OUT/attack/summary.json``.

``photons`` (default 4096, LoDoPaB's dose; ``null`` for noise-free data) makes every stage low-dose CT:
training on ``-log(Poisson(I0 exp(-mu A x)) / I0) / mu`` (ctrobust.operators.noise.LogPoissonNoise), the attack on the
noisy measurement, with the error of the noise itself as the dose line of the figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ctrobust import app
from ctrobust.app.specs import AttackSpec, EvaluateSpec, MakePhantomsSpec, ReportSpec, TrainSpec, objective_fields
from ctrobust.errors import CtrobustError
from ctrobust.files import write_text
from ctrobust.evaluation.report import plot_robustness_curves
from experiments import _common as C

NAME = "ct_143views"
METRICS = ("relative_error", "mse", "psnr", "ssim", "sq_error")


#: the application-layer function of each command
RUNNERS = {"make-phantoms": "run_make_phantoms", "train": "run_train", "attack": "run_attack", "evaluate": "run_evaluate",
           "report": "run_report"}


def stages(cfg: dict, out: Path, data: str | None, force: bool, progress: bool) -> list[tuple[str, object]]:
    """``(command, spec)`` of every stage this experiment runs, in order."""
    stages = []
    if data is None:
        data = str(out / "data" / "phantoms.h5")
        stages.append(("make-phantoms", MakePhantomsSpec(out=data, n=cfg["n_phantoms"], size=cfg["size"],
                                                         seed=cfg["phantom_seed"], progress=progress, force=force)))
    for obj in cfg["objectives"]:
        options = objective_fields(obj, eps=cfg["eps_train"], lam=cfg["lam"], g_lr=cfg["g_lr"], g_steps=cfg["g_steps"],
                                   mu=cfg["mu"], beta=cfg["beta"])  # each objective its own options
        stages.append(("train", TrainSpec(angles=cfg["angles"], data=data, objective=obj, **options,
                                          max_steps=cfg["max_steps"], batch_size=cfg["batch_size"],
                                          lr=cfg["lr"], channels=cfg["channels"], depth=cfg["depth"], seed=cfg["seed"],
                                          device=cfg["device"], out=str(out / "runs" / obj), progress=progress,
                                          force=force, photons=cfg.get("photons"))))
    stages.append(("attack", AttackSpec(checkpoint=tuple(str(out / "runs" / o / "best.pt") for o in cfg["objectives"]),
                                        data=data, split="test", n_samples=cfg["attack_samples"],
                                        eps_grid=tuple(cfg["eps_grid"]), steps=cfg["attack_steps"],
                                        restarts=cfg["attack_restarts"], device=cfg["device"], out=str(out / "attack"),
                                        progress=progress, force=force, photons=cfg.get("photons"))))
    results = (str(out / "attack"),)
    if cfg.get("real_shift"):
        stages.append(("evaluate", EvaluateSpec(
            checkpoint=tuple(str(out / "runs" / o / "best.pt") for o in cfg["objectives"]), data=data, split="test",
            n_samples=cfg["attack_samples"], shift="data", shift_data="real", ttt=True, ttt_steps=cfg["ttt_steps"],
            device=cfg["device"], out=str(out / "shift_real"), progress=progress, force=force,
            photons=cfg.get("photons"))))
        results += (str(out / "shift_real"),)
    stages.append(("report", ReportSpec(results=results, out=str(out / "report.md"), force=force)))
    return stages


def command_line(command: str, spec) -> str:
    """The ``ctrobust`` command line equivalent to running ``spec`` (``--angles`` always written)."""
    return " ".join(["ctrobust", command, *spec.argv(always=("angles",) if command == "train" else ())])


def _run(command: str, spec) -> None:
    print("+ " + command_line(command, spec), file=sys.stderr, flush=True)
    getattr(app, RUNNERS[command])(spec)


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
    plan = stages(cfg, out, data, args.force, args.progress)
    if data is None:
        (out / "data").mkdir(exist_ok=True)
    write_text(out / "commands.txt", "\n".join(command_line(c, spec) for c, spec in plan) + "\n")
    for command, spec in plan:
        _run(command, spec)
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
                           title=f"FBPConvNet, {cfg['angles']} views: attack (APGD) vs random noise")
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
