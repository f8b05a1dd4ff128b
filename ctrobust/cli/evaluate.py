"""``ctrobust evaluate``: the options are :class:`ctrobust.app.EvaluateSpec`, the work
:func:`ctrobust.app.run_evaluate` (clean metrics; distribution shift with test-time training; small features)."""

from __future__ import annotations

import sys

from ctrobust.app.specs import EvaluateSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "evaluate", EvaluateSpec, run=run,
        help="clean metrics of checkpoints and methods; distribution shift with test-time training; small features",
        description="Reconstruct y = A x of every sample of a split with each checkpoint / method (and FBP as a "
        "reference) and report MSE, relative error, PSNR (dB, data range 1) and SSIM. With --shift: metrics in "
        "distribution, under the shift, and under the shift after test-time training (--ttt), the SSIM gap and the "
        "share of it closed by TTT. With --small-features: whether inserted small disks are recovered, clean and "
        "under attack. Writes samples.csv, summary.csv and summary.json (plus shift.csv / features.csv, "
        "features_summary.csv) into --out.")


def run(args) -> int:
    from ctrobust.app.evaluate import run_evaluate

    result = run_evaluate(spec_from_args(EvaluateSpec, args))
    print(result.text())
    print(f"wrote {result.out}/: {', '.join(result.written)}", file=sys.stderr)
    return 0
