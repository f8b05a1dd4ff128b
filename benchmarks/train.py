"""Seconds per training step for each objective, and the share of the step spent in the operator layer.

FBPConvNet (U-Net channels/depth as given; the paper's is 64/4) on random-ellipse phantoms, 143 views,
batch 8, CPU. The operator share is the wall time inside ``RadonTransform`` calls (forward, adjoint and
their autograd backward, FBP filtering included) divided by the step time, measured by wrapping the
backend's forward/adjoint with timers.

    python benchmarks/train.py            # 128 and 256 px, every objective
    python benchmarks/train.py --quick    # 64 px, 2 timed steps, tiny U-Net: a smoke run
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ctrobust.data import load_split
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.models import FBPConvNet
from ctrobust.operators.radon import RadonTransform
from ctrobust.training.objectives import OBJECTIVES, build_objective


class OperatorTimer:
    """Accumulates wall time spent in the Radon backend's forward and adjoint."""

    def __init__(self, op: RadonTransform):
        self.seconds = 0.0
        backend = op._backend
        for name in ("forward", "adjoint"):
            original = getattr(backend, name)

            def timed(t, _original=original):
                start = time.perf_counter()
                out = _original(t)
                self.seconds += time.perf_counter() - start
                return out

            setattr(backend, name, timed)


def bench(size: int, angles: int, batch: int, objective: str, steps: int, channels: int, depth: int,
          pgd_steps: int = 3, adversary_mode: str | None = None) -> dict:
    op = RadonTransform(ParallelBeam2D(size, angles))
    timer = OperatorTimer(op)
    data = load_split(None, "train", size=size, n_phantoms=batch, seed=0)
    x = torch.stack([data[i] for i in range(batch)])
    model = FBPConvNet(op, channels, depth, seed=0).train()
    # universal at 1 ascent step, as measured for docs/performance.md (ctrobust train's default was 1 until
    # issue 20; Universal's own default, now also the command's, is 3)
    options = {"pgd": {"eps": 0.01, "steps": pgd_steps}, "universal": {"eps": 0.01, "steps": 1}}.get(
        objective, {"eps": 0.01} if objective in ("minmax", "jitter") else {})
    if objective == "minmax" and adversary_mode is not None:
        options["mode"] = adversary_mode
    obj = build_objective(objective, **options, seed=0)
    obj.setup(model, op)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with torch.no_grad():
            y = op(x)
        obj.observe_batch(torch.arange(batch))  # the dataset indices of the batch (the memory adversary's keys)
        loss, _ = obj.loss(model, x, y, model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.after_step(model)

    step()  # warm-up (system matrix, allocations)
    times, shares = [], []
    for _ in range(steps):
        timer.seconds = 0.0
        t0 = time.perf_counter()
        step()
        dt = time.perf_counter() - t0
        times.append(dt)
        shares.append(timer.seconds / dt)
    times.sort()
    return {"size": size, "angles": angles, "batch": batch, "objective": objective,
            "adversary_mode": adversary_mode if objective == "minmax" else None, "channels": channels,
            "depth": depth, "seconds_per_step": times[(len(times) - 1) // 2],
            "operator_share": sorted(shares)[(len(shares) - 1) // 2], "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64 px, 2 timed steps, channels 8 depth 2")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="image sizes in pixels")
    p.add_argument("--angles", type=int, default=143, help="views on [0, pi)")
    p.add_argument("--batch", type=int, default=8, help="images per step")
    p.add_argument("--steps", type=int, default=3, help="timed steps (lower median reported)")
    p.add_argument("--channels", type=int, default=64, help="U-Net channels (paper: 64)")
    p.add_argument("--depth", type=int, default=4, help="U-Net poolings (paper: 4)")
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    p.add_argument("--pgd-steps", type=int, default=3, help="ascent steps per f step of the pgd objective")
    p.add_argument("--demo", action="store_true", help="the demo's setting: 64 px, U-Net 16/3, 9 timed steps")
    p.add_argument("--adversary-mode", help="minmax: the adversary's mode (default: the objective's)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.channels, args.depth = [64], 2, 8, 2
    if args.demo:
        args.sizes, args.steps, args.channels, args.depth = [64], 9, 16, 3
    rows = []
    print(f"{'size':>5} {'objective':>13} {'s/step':>8} {'operator %':>10}")
    for size in args.sizes:
        for name in args.objectives:
            row = bench(size, args.angles, args.batch, name, args.steps, args.channels, args.depth, args.pgd_steps,
                        args.adversary_mode)
            rows.append(row)
            print(f"{size:>5} {name:>13} {row['seconds_per_step']:>8.3f} {100 * row['operator_share']:>9.1f}%", flush=True)
    for size in args.sizes:
        by = {r["objective"]: r["seconds_per_step"] for r in rows if r["size"] == size}
        if "minmax" in by and "pgd" in by:
            print(f"{size} px: minmax / pgd ({args.pgd_steps} steps) seconds per step = {by['minmax'] / by['pgd']:.2f}"
                  + (f"; minmax / plain = {by['minmax'] / by['plain']:.2f}" if "plain" in by else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
