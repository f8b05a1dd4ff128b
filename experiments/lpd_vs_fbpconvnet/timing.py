"""Time one training step (plain objective: forward, backward, Adam) of FBPConvNet and Learned Primal-Dual,
and the share of it spent inside the operator (every ``A`` and ``A^T`` application, forward and backward).

The operator's time is measured by wrapping its ``_matvec`` / ``_rmatvec`` (where the projector runs; the
autograd rule calls them for the backward pass too). Median of ``--repeats`` steps after one warm-up step.

    python -m experiments.lpd_vs_fbpconvnet.timing --size 64 --angles 143 --out step_time.csv
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ctrobust.evaluation.report import write_csv
from ctrobust.models import FBPConvNet, LearnedPrimalDual
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.operators.radon import RadonTransform


def _timed_operator(op):
    """Wrap ``op._matvec`` / ``op._rmatvec`` on the instance; return a dict of accumulated seconds and calls."""
    acc = {"s": 0.0, "calls": 0}
    for name in ("_matvec", "_rmatvec"):
        inner = getattr(op, name)

        def wrapper(t, inner=inner):
            start = time.perf_counter()
            out = inner(t)
            acc["s"] += time.perf_counter() - start
            acc["calls"] += 1
            return out

        setattr(op, name, wrapper)
    return acc


def step_times(model, op, acc, batch: int, repeats: int, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, 1, *op.image_shape), generator=gen)
    with torch.no_grad():
        y = op(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rows = []
    for i in range(repeats + 1):
        acc["s"], acc["calls"] = 0.0, 0
        start = time.perf_counter()
        loss = torch.mean((model(y) - x) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total = time.perf_counter() - start
        if i:  # the first step warms up
            rows.append({"step_s": total, "operator_s": acc["s"], "operator_calls": acc["calls"]})
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--angles", type=int, default=143)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = []
    for name in ("fbpconvnet", "lpd"):
        op = RadonTransform(ParallelBeam2D(args.size, args.angles))
        model = FBPConvNet(op, 16, 3, seed=0) if name == "fbpconvnet" else LearnedPrimalDual(op, seed=0)
        acc = _timed_operator(op)
        rows = step_times(model.train(), op, acc, args.batch, args.repeats)
        step = statistics.median(r["step_s"] for r in rows)
        oper = statistics.median(r["operator_s"] for r in rows)
        out.append({"model": name, "size": args.size, "angles": args.angles, "detectors": op.geometry.n_detectors,
                    "backend": op.backend, "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
                    "step_s_median": round(step, 4), "operator_s_median": round(oper, 4),
                    "operator_share": round(oper / step, 3), "operator_calls_per_step": rows[0]["operator_calls"],
                    "parameters": sum(p.numel() for p in model.parameters())})
        print(out[-1], flush=True)
    write_csv(out, args.out)
    return out


if __name__ == "__main__":
    main()
