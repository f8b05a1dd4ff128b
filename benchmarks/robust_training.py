"""Does robust training work? Each objective trained in the demo's setting, then attacked with the default attack.

Setting (issue 11, docs/cli/demo.md): FBPConvNet (U-Net 16 channels, 3 poolings) on 64 px built-in
phantoms, 143 views, 600 Adam steps, batch 8, eps 0.01 and each objective's default lambda (0.5 for
minmax, ``minmax-lam1`` for 1); the
relative error ``||f(y + d) - x|| / ||x||`` on 8 test phantoms under the default attack (APGD, 100
steps) at eps 0.005 / 0.01 / 0.02 / 0.04, mean and spread over seeds, and
the median seconds per training step (``steps.csv``), all measured in one run.

    python benchmarks/robust_training.py                            # plain, weight-decay, parseval, minmax; seeds 0,1,2
    python benchmarks/robust_training.py --objectives pgd --seeds 0 # per-sample PGD training (3 steps) as a reference
    python benchmarks/robust_training.py --quick                    # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ctrobust.data import load_split
from ctrobust.training.checkpoint import load_model
from ctrobust.evaluation.metrics import mean_std
from ctrobust.attacks import AttackSettings
from ctrobust.evaluation.robustness import robustness_curve
from ctrobust.app import TrainSpec, run_train
from ctrobust.app.specs import objective_fields

EPS_GRID = (0.0, 0.005, 0.01, 0.02, 0.04)


#: extra names: an objective with non-default options
VARIANTS = {"minmax-conditioned": ("minmax", {"adversary_mode": "conditioned", "g_lr": 1e-2}),
            "minmax-memory": ("minmax", {"adversary_mode": "memory"}),
            "minmax-project": ("minmax", {"adversary_mode": "project"}),
            "minmax-lam0.5": ("minmax", {"lam": 0.5}),
            "minmax-lam1": ("minmax", {"lam": 1.0})}


def _finished(out: Path, steps: int) -> bool:
    """True when ``out`` holds a run that reached ``steps`` optimiser steps."""
    try:
        with open(out / "steps.csv") as fh:
            rows = list(csv.DictReader(fh))
        return (out / "last.pt").exists() and bool(rows) and int(rows[-1]["step"]) >= steps
    except (OSError, KeyError, ValueError):
        return False


def run_one(workdir: Path, objective: str, seed: int, steps: int, size: int, angles: int, channels: int, depth: int,
            pgd_steps: int, n_test: int, settings=None) -> dict:
    name = f"{objective}{pgd_steps}" if objective == "pgd" else objective
    out = workdir / f"{name}-seed{seed}-{steps}steps-{size}px"
    base, options = VARIANTS.get(objective, (objective, {}))
    if not _finished(out, steps):  # a killed run is retrained from scratch, never evaluated half-done
        run_train(TrainSpec(angles=angles, size=size, objective=base, max_steps=steps, channels=channels,
                            depth=depth, seed=seed, out=str(out), force=True, progress=False, device="cpu",
                            **objective_fields(base, pgd_steps=pgd_steps, eps=0.01, **options)))
    with open(out / "steps.csv") as fh:
        seconds = [float(r["seconds"]) for r in csv.DictReader(fh)]
    model, _ = load_model(out / "last.pt")
    data = load_split(None, "test", size=size, n_phantoms=n_test, seed=0)
    res = robustness_curve(model, data, model.operator, EPS_GRID, settings, progress=False, batch_size=n_test,
                           n_examples=0, linearization=False)
    errors = {e: m for e, m in zip(*res.curve("relative_error", "attack")[:2])}
    return {"objective": name, "seed": seed, "seconds_per_step": float(np.median(seconds)),
            **{f"eps {e:g}": float(errors[e]) for e in EPS_GRID}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", default="plain,weight-decay,parseval,minmax")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--pgd-steps", type=int, default=3)
    p.add_argument("--n-test", type=int, default=8)
    p.add_argument("--workdir", default="benchmarks/.runs/robust_training")
    p.add_argument("--json", default=None, help="append the rows as JSON lines here")
    p.add_argument("--strong", action="store_true",
                   help="attack with the strong budget (APGD 300 steps x 2 restarts) instead of the default (100 x 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 32 px, 30 views, 10 steps, tiny U-Net, 2 test samples")
    args = p.parse_args(argv)
    size, angles, channels, depth = 64, 143, 16, 3
    if args.quick:
        size, angles, channels, depth, args.steps, args.n_test = 32, 30, 4, 2, 10, 2
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for objective in args.objectives.split(","):
            row = run_one(Path(args.workdir), objective, seed, args.steps, size, angles, channels, depth,
                          args.pgd_steps, args.n_test, AttackSettings(steps=300, restarts=2) if args.strong else None)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    budget = "the strong attack (APGD 300 x 2)" if args.strong else "the default attack (APGD 100)"
    print(f"\nrelative error under {budget}, mean +- std over seeds {args.seeds}; "
          f"{args.steps} steps, {size} px, {angles} views, {args.n_test} test phantoms")
    cols = [f"eps {e:g}" for e in EPS_GRID]
    print(f"{'objective':<14} " + " ".join(f"{c:>17}" for c in ["clean" if c == "eps 0" else c for c in cols]) + f" {'s/step':>8}")
    for objective in dict.fromkeys(r["objective"] for r in rows):
        sel = [r for r in rows if r["objective"] == objective]
        stats = [mean_std("e", [r[c] for r in sel]) for c in cols]
        cells = [f"{st['e_mean']:.4f} +- {st['e_std']:.4f}" for st in stats]
        print(f"{objective:<14} " + " ".join(f"{c:>17}" for c in cells) + f" {np.median([r['seconds_per_step'] for r in sel]):8.3f}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
