"""``ctrobust attack``: the options are :class:`ctrobust.app.AttackSpec`, the work :func:`ctrobust.app.run_attack`.

Worst-case robustness curves of trained checkpoints and classical methods (fbp, tv, dip), all attacked
with the same attack and drawn on one curve with FBP as reference; writes ``samples.csv``,
``summary.csv``, ``summary.json``, ``robustness_curve.png`` and ``gallery.png`` into ``--out``.
"""

from __future__ import annotations

import sys

from ctrobust.app.specs import AttackSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "attack", AttackSpec, run=run,
        help="worst-case robustness curves (APGD in sinogram space) of checkpoints, FBP, TV and DIP",
        description="Attack each model (trained checkpoints and methods: fbp, tv, dip) with the same gradient "
        "ascent on the measurements over a grid of perturbation sizes and compare with random noise of the same "
        "norm; all appear on one robustness curve with FBP as reference. Writes samples.csv, summary.csv, "
        "summary.json, robustness_curve.png and gallery.png into --out.")


def run(args) -> int:
    from ctrobust.app.attack import run_attack

    result = run_attack(spec_from_args(AttackSpec, args))
    print(result.text())
    print(f"wrote {result.out}/: {', '.join(result.written)}", file=sys.stderr)
    return 0
