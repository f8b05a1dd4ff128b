"""The PGA attack's overhead over the model itself.

Times ``pga_attack`` (``--steps`` steps, batch ``--batch``, ``--size`` px, ``--angles`` views,
FBPConvNet with ``--channels`` / ``--depth``) against the same number of plain forward + backward
passes of the same model:

- ``input-grad``: ``torch.autograd.grad(||f(y) - x||^2, y)``, the work one PGA step cannot avoid
  (the reference for the < 10 % overhead target);
- ``param-grad``: ``loss.backward()`` into the parameters, a training step's passes, for scale.

The attack additionally does one forward of the final iterate and the per-sample normalise / project /
keep-worst bookkeeping; the overhead is ``t_attack / t_input_grad - 1``. Lower median of ``--repeats``.

    python benchmarks/attack.py            # 256 px, 143 views, batch 8, 50 steps (the paper's CT setting)
    python benchmarks/attack.py --quick    # 128 px, a smaller U-Net: a quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from ctrobust.attacks import AttackSettings, pga_attack
from ctrobust.data.phantoms import random_ellipses
from ctrobust.files import resolve_device
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.models import FBPConvNet
from ctrobust.operators.radon import RadonTransform


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats, clock=time.perf_counter):
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = clock()
        fn()
        _sync(device)
        times.append(clock() - t0)
    return statistics.median_low(times), times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="128 px, channels 16, depth 3")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default 256, quick 128)")
    p.add_argument("--angles", type=int, default=143, help="views on [0, pi)")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--steps", type=int, default=50, help="PGA steps (= passes of the reference loops)")
    p.add_argument("--channels", type=int, default=None, help="U-Net width (default 64, quick 16)")
    p.add_argument("--depth", type=int, default=None, help="U-Net poolings (default 4, quick 3)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions of each variant")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: perf_counter; cpu: process CPU time (steadier on a shared machine, CPU runs only)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    size = args.size or (128 if args.quick else 256)
    channels = args.channels or (16 if args.quick else 64)
    depth = args.depth or (3 if args.quick else 4)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    op = RadonTransform(ParallelBeam2D(size, args.angles))
    model = FBPConvNet(op, channels=channels, depth=depth, seed=0).to(device).eval()
    x = torch.from_numpy(random_ellipses(args.batch, size, seed=0)).unsqueeze(1).to(device)
    with torch.no_grad():
        y = op(x)

    def input_grad():
        for _ in range(args.steps):
            v = y.detach().requires_grad_(True)
            loss = (model(v) - x).flatten(1).pow(2).sum(1).sum()
            torch.autograd.grad(loss, v)

    def param_grad():
        for _ in range(args.steps):
            model.zero_grad(set_to_none=True)
            loss = (model(y) - x).flatten(1).pow(2).sum(1).sum()
            loss.backward()
        model.zero_grad(set_to_none=True)

    def attack():
        pga_attack(model, y, x, 0.01, AttackSettings(steps=args.steps), generator=torch.Generator().manual_seed(0))

    # warm-up (system matrix on the device, allocator, kernels)
    v = y.detach().requires_grad_(True)
    torch.autograd.grad((model(v) - x).pow(2).sum(), v)

    results = {"device": str(device), "size": size, "angles": args.angles, "batch": args.batch, "steps": args.steps,
               "channels": channels, "depth": depth, "threads": torch.get_num_threads(), "torch": torch.__version__, "clock": args.clock}
    for name, fn in (("input_grad", input_grad), ("attack", attack), ("param_grad", param_grad)):
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        best, all_times = timed(fn, device, args.repeats, clock)
        results[f"{name}_s"] = best
        results[f"{name}_all_s"] = all_times
        print(f"{name:>10}: {best:8.3f} s  ({1000 * best / args.steps:7.1f} ms / step)  runs {['%.2f' % t for t in all_times]}",
              file=sys.stderr)
    results["overhead_vs_input_grad"] = results["attack_s"] / results["input_grad_s"] - 1
    results["overhead_vs_param_grad"] = results["attack_s"] / results["param_grad_s"] - 1
    print(f"attack overhead over {args.steps} forward+backward(input) passes: {100 * results['overhead_vs_input_grad']:+.1f} %"
          f" (target < 10 %); over forward+backward(parameters): {100 * results['overhead_vs_param_grad']:+.1f} %")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
