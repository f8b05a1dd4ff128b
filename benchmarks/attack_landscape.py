"""Is the gap to the worst case a matter of step rule, or of the landscape? Step rules at 100 passes.

Reproduces the table "Step rules measured against the landscape" of docs/robustness.md: on trained
FBPConvNets (default: the demo-setting plain and min-max networks that ``benchmarks/attack_strength.py``
and ``benchmarks/robust_training.py`` train), 8 test phantoms, target truth, each rule below is run from
``--seeds`` random starts at every eps; the reference is, per sample, the best squared error of every
run of this script plus APGD ``--reference-steps`` x ``--reference-restarts``. It prints the mean over
samples (averaged over seeds) and the smallest sample of the fraction of the reference reached.

Rules (100 forward+backward passes unless the name says otherwise):

- ``apgd``: the default (``pga_attack``);
- ``cosine-8r``, ``cosine-8r-m1``, ``cosine-4r-m0.5``: projected ascent with a cosine step schedule
  from 8 r (4 r) to 0.01 r, APGD's momentum weight 0.75 (1 = none, 0.5);
- ``power``: the generalised power method ``d <- r g / ||g||`` (an infinite step);
- ``halving``: successive halving, 4 runs x 10 steps -> best 2 x 15 -> best 1 x 30;
- ``apgd-polish`` (150): the default, then 50 APGD steps from its best point (first step 0.25 r);
- ``apgd-300`` (300): one APGD run of 300 steps;
- ``best-of-4`` (400): the best of four default runs.

    python benchmarks/attack_landscape.py --checkpoint PLAIN --checkpoint MINMAX      # ~1 h on 2 cores
    python benchmarks/attack_landscape.py --quick                                   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ctrobust.attacks import AttackSettings, eval_mode, perturbation_radius, pga_attack, squared_error
from ctrobust.attacks.ascent import _step_direction
from ctrobust.data import load_split
from ctrobust.training.checkpoint import load_model
from ctrobust.attacks.ball import _per_sample, project_l2_ball, random_start_in_ball

EPS_GRID = (0.01, 0.02, 0.04)


def _loss_and_grad(f, y, x, d):
    d = d.detach().requires_grad_(True)
    loss = squared_error(f(y + d), x)
    (g,) = torch.autograd.grad(loss.sum(), d)
    return loss.detach().double(), g


def scheduled_ascent(f, y, x, radius, start, steps, eta0, eta_end, momentum):
    """Projected ascent, cosine step ``eta0 r -> eta_end r``, APGD's momentum form; best loss per sample."""
    d = d_prev = project_l2_ball(start, radius)
    best = torch.full((y.shape[0],), -math.inf, dtype=torch.float64)
    for k in range(steps):
        loss, g = _loss_and_grad(f, y, x, d)
        best = torch.maximum(best, loss)
        eta = eta_end + 0.5 * (eta0 - eta_end) * (1 + math.cos(math.pi * k / max(steps - 1, 1)))
        z = project_l2_ball(d + _per_sample(eta * radius, d) * _step_direction(g, "l2"), radius)
        m = 1.0 if k == 0 else momentum
        d_prev, d = d, project_l2_ball(d + m * (z - d) + (1 - m) * (d - d_prev), radius)
    with torch.no_grad():
        return torch.maximum(best, squared_error(f(y + d), x).double())


def power_method(f, y, x, radius, start, steps):
    d = project_l2_ball(start, radius)
    best = torch.full((y.shape[0],), -math.inf, dtype=torch.float64)
    for _ in range(steps):
        loss, g = _loss_and_grad(f, y, x, d)
        best = torch.maximum(best, loss)
        d = _step_direction(g, "l2") * _per_sample(radius, g)
    with torch.no_grad():
        return torch.maximum(best, squared_error(f(y + d), x).double())


def successive_halving(f, y, x, eps, seed, schedule=((4, 10), (2, 15), (1, 30))):
    """Best-first pruning of parallel APGD runs; later phases continue from the survivors (first step r)."""
    b = y.shape[0]
    best, starts = None, None
    for phase, (k, steps) in enumerate(schedule):
        yk, xk = y.repeat(k, *([1] * (y.dim() - 1))), x.repeat(k, *([1] * (x.dim() - 1)))
        res = pga_attack(f, yk, xk, eps, AttackSettings(steps=steps, step_size=None if phase == 0 else 1.0),
                         init=starts, generator=torch.Generator().manual_seed(seed + 101 * phase))
        err = res.error.reshape(k, b)
        best = err.max(0).values if best is None else torch.maximum(best, err.max(0).values)
        if phase + 1 < len(schedule):
            keep = err.argsort(0, descending=True)[: schedule[phase + 1][0]]  # (k_next, B)
            deltas = res.delta.reshape(k, b, *y.shape[1:])
            starts = torch.cat([deltas[keep[j], torch.arange(b)] for j in range(keep.shape[0])])
    return best


def run_rule(name: str, f, y, x, eps: float, seed: int) -> tuple[np.ndarray, int]:
    """``(squared errors (B,), passes)`` of one rule from one seed."""
    gen = torch.Generator().manual_seed(seed)
    radius = perturbation_radius(y, eps)
    if name == "apgd":
        return pga_attack(f, y, x, eps, generator=gen).error.numpy(), 100
    if name == "apgd-300":
        return pga_attack(f, y, x, eps, AttackSettings(steps=300), generator=gen).error.numpy(), 300
    if name == "apgd-polish":
        first = pga_attack(f, y, x, eps, generator=gen)
        polish = pga_attack(f, y, x, eps, AttackSettings(steps=50, step_size=0.25, random_start=False),
                            init=first.delta)
        return torch.maximum(first.error, polish.error).numpy(), 150
    if name == "best-of-4":
        errs = [pga_attack(f, y, x, eps, generator=torch.Generator().manual_seed(seed + 1000 * k)).error for k in range(4)]
        return torch.stack(errs).amax(0).numpy(), 400
    if name == "halving":
        return successive_halving(f, y, x, eps, seed).numpy(), 100
    start = random_start_in_ball(y, radius, gen, "l2")
    if name == "power":
        return power_method(f, y, x, radius, start, 100).numpy(), 100
    cosine = {"cosine-8r": (8.0, 0.75), "cosine-8r-m1": (8.0, 1.0), "cosine-4r-m0.5": (4.0, 0.5)}
    if name in cosine:
        eta0, momentum = cosine[name]
        return scheduled_ascent(f, y, x, radius, start, 100, eta0, 0.01, momentum).numpy(), 100
    raise ValueError(f"unknown rule {name!r}")


RULES = ("apgd", "cosine-8r", "cosine-8r-m1", "cosine-4r-m0.5", "power", "halving", "apgd-polish", "apgd-300",
         "best-of-4")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", default=[],
                   help="trained FBPConvNet(s) (default: benchmarks/.runs' plain and min-max, seed 0)")
    p.add_argument("--rules", default=",".join(RULES), help=f"comma-separated subset of {', '.join(RULES)}")
    p.add_argument("--seeds", default="0,1", help="random starts per rule (comma-separated seeds)")
    p.add_argument("--eps", default=",".join(map(str, EPS_GRID)), help="eps values, relative to ||y||_2")
    p.add_argument("--n-samples", type=int, default=8, help="test phantoms")
    p.add_argument("--reference-steps", type=int, default=300)
    p.add_argument("--reference-restarts", type=int, default=4)
    p.add_argument("--json", default=None, help="also write the rows (raw squared errors included) here")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 samples, one seed, eps 0.02, a short reference")
    args = p.parse_args(argv)
    rules = [r for r in args.rules.split(",") if r]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    eps_grid = [float(e) for e in args.eps.split(",") if e]
    if args.quick:
        args.n_samples, seeds, eps_grid, args.reference_steps, args.reference_restarts = 2, [0], [0.02], 30, 2
    paths = [Path(c) for c in args.checkpoint] or [
        Path("benchmarks/.runs/plain-64px-600steps-seed0/best.pt"),
        Path("benchmarks/.runs/robust_training/minmax-seed0-600steps-64px/best.pt")]
    missing = [str(q) for q in paths if not q.is_file()]
    if missing:
        print(f"missing checkpoint(s): {', '.join(missing)}; train them with benchmarks/attack_strength.py and "
              "benchmarks/robust_training.py, or pass --checkpoint", file=sys.stderr)
        return 1
    out_rows = []
    for path in paths:
        f, _ = load_model(path)
        f.eval()
        op = f.operator
        data = load_split(None, "test", size=op.domain_shape[-1], n_phantoms=args.n_samples, seed=0)
        x = torch.stack([data[i] for i in range(len(data))])
        with torch.no_grad():
            y = op(x)
        print(f"\n{path.parent.name}: {len(x)} phantoms; mean over samples (averaged over {len(seeds)} seed(s)) / "
              "smallest sample of the fraction of the best squared error any run found")
        found: dict[tuple, np.ndarray] = {}
        t0 = time.perf_counter()
        with eval_mode(f):
            for eps in eps_grid:
                ref = pga_attack(f, y, x, eps,
                                 AttackSettings(steps=args.reference_steps, restarts=args.reference_restarts),
                                 generator=torch.Generator().manual_seed(7)).error.numpy()
                found[("reference", eps, 7)] = ref
                for rule in rules:
                    for seed in seeds:
                        found[(rule, eps, seed)], _ = run_rule(rule, f, y, x, eps, seed)
        best = {eps: np.max([v for (r, e, s), v in found.items() if e == eps], axis=0) for eps in eps_grid}
        print(f"{'rule':<16} {'passes':>6} " + " ".join(f"{'eps ' + str(e):>15}" for e in eps_grid))
        for rule in rules:
            cells, row = [], {"model": path.parent.name, "rule": rule}
            for eps in eps_grid:
                fr = np.stack([found[(rule, eps, s)] / best[eps] for s in seeds])
                cells.append(f"{100 * fr.mean(1).mean():5.1f} / {100 * fr.min():5.1f} %")
                row[f"eps {eps}"] = {"mean": float(fr.mean(1).mean()), "min": float(fr.min()),
                                     "sq_error": {str(s): found[(rule, eps, s)].tolist() for s in seeds}}
            passes = {"apgd-polish": 150, "apgd-300": 300, "best-of-4": 400}.get(rule, 100)
            row["passes"] = passes
            out_rows.append(row)
            print(f"{rule:<16} {passes:>6} " + " ".join(f"{c:>15}" for c in cells))
        print(f"({time.perf_counter() - t0:.0f} s; reference APGD {args.reference_steps} x {args.reference_restarts})")
    if args.json:
        Path(args.json).write_text(json.dumps(out_rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
