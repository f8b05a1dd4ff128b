"""``ctrobust demo``: the options are :class:`ctrobust.app.DemoSpec`, the work :func:`ctrobust.app.run_demo`
(operator check, plain and min-max training, APGD attack, report on built-in phantoms)."""

from __future__ import annotations

from ctrobust.app.specs import DemoSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "demo", DemoSpec, run=run,
        help="the main job on built-in phantoms: operator check, plain + min-max training, APGD attack, report",
        description="The main job end to end on built-in phantoms: the operator check, a plain and a min-max "
        "FBPConvNet, the APGD attack of both and FBP, and one report. Writes figures (PNG), tables (CSV/JSON) and "
        "report.md to --out.")


def run(args) -> int:
    from ctrobust.app.demo import run_demo

    run_demo(spec_from_args(DemoSpec, args))
    return 0
