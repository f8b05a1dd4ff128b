"""Does robust training work? Each objective trained in the demo's setting, then attacked.

Setting (issue 11, docs/cli/demo.md): FBPConvNet (U-Net 16 channels, 3 poolings) on 64 px built-in
phantoms, 143 views, 600 Adam steps, batch 8, eps 0.01 and each objective's default lambda (0.5 for
minmax, 1 for the others); the relative error ``||f(y + d) - x|| / ||x||`` on ``--n-test`` test phantoms
under the default attack (APGD, 100 steps) or the strong one (``--strong``: APGD 300 steps x 2
restarts, with continuations of unconverged samples) at each eps of ``--eps``, mean and spread over
seeds, the median seconds per training step (``steps.csv``) and, for min-max, the adversary's final
``g_efficiency`` (against its own moving f) and ``g_cosine`` (mean |cos| between the perturbations of
two samples), all measured in one run.

Objective names: an objective of ``ctrobust train`` (``plain``, ``minmax``, ``pgd``, ...), a variant
below (``minmax-memory``: the per-sample adversary; ``minmax-shared``, ``minmax-conditioned``,
``minmax-project``), each optionally suffixed with ``-lam<L>`` for weight lambda = L of the perturbed
term (``pgd-lam0.5``, ``minmax-memory-lam2``).

    python benchmarks/robust_training.py                            # plain, weight-decay, parseval, minmax; seeds 0,1,2
    python benchmarks/robust_training.py --objectives pgd --seeds 0 # per-sample PGD training (3 steps) as a reference
    python benchmarks/robust_training.py --objectives plain,minmax-memory-lam0.5,pgd-lam0.5 --strong \\
        --eps 0,0.01,0.02 --n-test 16 --json rows.jsonl             # issue 25's comparison at one lambda
    python benchmarks/robust_training.py --table rows.jsonl --figure tradeoff.png   # tables (+ the lambda
                                                                    # trade-off figure) from earlier rows
    python benchmarks/robust_training.py --quick                    # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

from ctrobust.errors import CtrobustError

from ctrobust.data import load_split
from ctrobust.training.checkpoint import load_model
from ctrobust.evaluation.metrics import mean_std
from ctrobust.attacks import AttackSettings
from ctrobust.evaluation.robustness import robustness_curve
from ctrobust.app import TrainSpec, run_train
from ctrobust.app.specs import objective_fields

EPS_GRID = (0.0, 0.005, 0.01, 0.02, 0.04)

#: extra names: an objective with non-default options
VARIANTS = {"minmax-shared": ("minmax", {"adversary_mode": "shared"}),
            "minmax-memory": ("minmax", {"adversary_mode": "memory"}),
            "minmax-conditioned": ("minmax", {"adversary_mode": "conditioned", "g_lr": 1e-2}),
            "minmax-project": ("minmax", {"adversary_mode": "project"})}

_LAM = re.compile(r"^(?P<stem>.+)-lam(?P<lam>[0-9]*\.?[0-9]+)$")


def parse_objective(name: str) -> tuple[str, dict, float | None]:
    """``(objective, options, lam)`` of a benchmark name: a variant or objective, then ``-lam<L>`` optionally.

    >>> parse_objective("minmax-memory-lam2")
    ('minmax', {'adversary_mode': 'memory', 'lam': 2.0}, 2.0)
    """
    lam = None
    match = _LAM.match(name)
    if match:
        name, lam = match["stem"], float(match["lam"])
    base, options = VARIANTS.get(name, (name, {}))
    return base, {**options, **({} if lam is None else {"lam": lam})}, lam


def _finished(out: Path, steps: int) -> bool:
    """True when ``out`` holds a run that reached ``steps`` optimiser steps."""
    try:
        with open(out / "steps.csv") as fh:
            rows = list(csv.DictReader(fh))
        return (out / "last.pt").exists() and bool(rows) and int(rows[-1]["step"]) >= steps
    except (OSError, KeyError, ValueError):
        return False


def _last_validation(out: Path) -> dict:
    """The adversary's diagnostics at the last validation (empty for objectives without an adversary)."""
    try:
        with open(out / "validation.csv") as fh:
            last = list(csv.DictReader(fh))[-1]
    except (OSError, IndexError):
        return {}
    return {k: float(last[k]) for k in ("g_efficiency", "g_random_efficiency", "g_cosine") if last.get(k) not in (None, "")}


def run_one(workdir: Path, objective: str, seed: int, steps: int, size: int, angles: int, channels: int, depth: int,
            pgd_steps: int, n_test: int, settings=None, eps_grid=EPS_GRID) -> dict:
    base, options, lam = parse_objective(objective)
    name = objective.replace("pgd", f"pgd{pgd_steps}", 1) if base == "pgd" else objective
    out = workdir / f"{name}-seed{seed}-{steps}steps-{size}px"
    if not _finished(out, steps):  # a killed run is retrained from scratch, never evaluated half-done
        run_train(TrainSpec(angles=angles, size=size, objective=base, max_steps=steps, channels=channels,
                            depth=depth, seed=seed, out=str(out), force=True, progress=False, device="cpu",
                            **objective_fields(base, pgd_steps=pgd_steps, eps=0.01, **options)))
    with open(out / "steps.csv") as fh:
        seconds = [float(r["seconds"]) for r in csv.DictReader(fh)]
    model, extra = load_model(out / "last.pt")
    data = load_split(None, "test", size=size, n_phantoms=n_test, seed=0)
    res = robustness_curve(model, data, model.operator, eps_grid, settings, progress=False, batch_size=n_test,
                           n_examples=0, linearization=False)
    errors = {e: m for e, m in zip(*res.curve("relative_error", "attack")[:2])}
    lam = lam if lam is not None else ((extra.get("objective") or {}).get("config") or {}).get("lam")
    return {"objective": name, "family": _LAM.sub(r"\g<stem>", name), "lam": lam, "seed": seed,
            "seconds_per_step": float(np.median(seconds)), **_last_validation(out),
            **{f"eps {e:g}": float(errors[e]) for e in eps_grid}}


def table(rows: list[dict], title: str = "") -> str:
    """Mean +- std over seeds of every eps column, one line per objective (in first-seen order)."""
    cols = [c for c in dict.fromkeys(k for r in rows for k in r) if c.startswith("eps ")]
    lines = [title] if title else []
    lines.append(f"{'objective':<22} " + " ".join(f"{'clean' if c == 'eps 0' else c:>17}" for c in cols)
                 + f" {'s/step':>8} {'seeds':>6} {'g_eff':>6} {'g_cos':>6}")
    for objective in dict.fromkeys(r["objective"] for r in rows):
        sel = [r for r in rows if r["objective"] == objective]
        cells = []
        for c in cols:
            st = mean_std("e", [r[c] for r in sel if c in r])
            cells.append(f"{st['e_mean']:.4f} +- {st['e_std']:.4f}")
        diag = [np.mean([r[k] for r in sel]) if all(k in r for r in sel) else float("nan") for k in ("g_efficiency", "g_cosine")]
        lines.append(f"{objective:<22} " + " ".join(f"{c:>17}" for c in cells)
                     + f" {np.median([r['seconds_per_step'] for r in sel]):8.3f} {len(sel):6d} {diag[0]:6.2f} {diag[1]:6.2f}")
    return "\n".join(lines)


def tradeoff_figure(rows: list[dict], path: str) -> None:
    """Clean error against the worst case at each attacked eps (one panel each; means over seeds), one curve
    per family over lambda (labels: lambda), plain as a star."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = [c for c in dict.fromkeys(k for r in rows for k in r) if c.startswith("eps ") and c != "eps 0"]
    fig, axes = plt.subplots(1, len(cols), figsize=(5.0 * len(cols), 4.2), squeeze=False)
    seeds = ",".join(map(str, sorted({r["seed"] for r in rows})))
    for ax, col in zip(axes[0], cols):
        for family in dict.fromkeys(r["family"] for r in rows if r.get("lam") is not None):
            lams = sorted({r["lam"] for r in rows if r["family"] == family and r.get("lam") is not None and col in r})
            pts = []
            for lam in lams:
                sel = [r for r in rows if r["family"] == family and r.get("lam") == lam and col in r]
                pts.append((np.mean([r["eps 0"] for r in sel]), np.mean([r[col] for r in sel]), lam))
            if not pts:
                continue
            label = {"minmax": "minmax (the run's default adversary)"}.get(family, family)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) > 1 else "s", label=label)
            for x, y, lam in pts:
                ax.annotate(f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        plain = [r for r in rows if r["family"] == "plain" and col in r]
        if plain:
            ax.plot(np.mean([r["eps 0"] for r in plain]), np.mean([r[col] for r in plain]), "k*", ms=10, label="plain")
        ax.set_xlabel("clean relative error")
        ax.set_ylabel(f"worst-case relative error at {col}")
        ax.set_title(f"{col}: labels are lambda; mean of seeds {seeds}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", default="plain,weight-decay,parseval,minmax",
                   help="comma-separated objective names (see above); default %(default)s")
    p.add_argument("--seeds", default="0,1,2", help="training seeds; default %(default)s")
    p.add_argument("--steps", type=int, default=600, help="training steps; default %(default)s")
    p.add_argument("--pgd-steps", type=int, default=3, help="ascent steps of the pgd objective; default %(default)s")
    p.add_argument("--n-test", type=int, default=8, help="test phantoms attacked; default %(default)s")
    p.add_argument("--eps", default=",".join(f"{e:g}" for e in EPS_GRID),
                   help="relative eps grid of the attack (0 = clean); default %(default)s")
    p.add_argument("--workdir", default="benchmarks/.runs/robust_training",
                   help="training runs (a finished run is reused, a killed one retrained); default %(default)s")
    p.add_argument("--json", default=None, help="append the rows as JSON lines here")
    p.add_argument("--strong", action="store_true",
                   help="attack with the strong budget (APGD 300 steps x 2 restarts) instead of the default (100 x 1)")
    p.add_argument("--table", nargs="+", default=None, metavar="JSONL",
                   help="train nothing: print the table of the rows in these JSON-lines files")
    p.add_argument("--figure", default=None, help="write the lambda trade-off figure (PNG) of the rows here")
    p.add_argument("--quick", action="store_true", help="smoke run: 32 px, 30 views, 10 steps, tiny U-Net, 2 test samples")
    args = p.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for f in args.table for line in open(f) if line.strip()]
        print(table(rows, f"{len(rows)} rows from {', '.join(args.table)}"))
        if args.figure:
            tradeoff_figure(rows, args.figure)
        return 0
    size, angles, channels, depth = 64, 143, 16, 3
    if args.quick:
        size, angles, channels, depth, args.steps, args.n_test = 32, 30, 4, 2, 10, 2
    eps_grid = tuple(float(e) for e in args.eps.split(","))
    settings = AttackSettings(steps=300, restarts=2) if args.strong else None
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for objective in args.objectives.split(","):
            row = run_one(Path(args.workdir), objective, seed, args.steps, size, angles, channels, depth,
                          args.pgd_steps, args.n_test, settings, eps_grid)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    budget = "the strong attack (APGD 300 x 2, continuations)" if args.strong else "the default attack (APGD 100)"
    print("\n" + table(rows, f"relative error under {budget}, mean +- std over seeds {args.seeds}; "
                             f"{args.steps} steps, {size} px, {angles} views, {args.n_test} test phantoms"))
    if args.figure:
        tradeoff_figure(rows, args.figure)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    try:
        sys.exit(main())
    except CtrobustError as exc:  # a wrong objective name, a missing checkpoint: the message, not a traceback
        sys.exit(f"error: {exc}")
