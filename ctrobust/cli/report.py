"""``ctrobust report``: the options are :class:`ctrobust.app.ReportSpec`, the work :func:`ctrobust.app.run_report`."""

from __future__ import annotations

import sys

from ctrobust.app.specs import ReportSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "report", ReportSpec, run=run,
        help="collect the tables and figures of result folders into one Markdown or HTML report",
        description="Read summary.json and the PNG figures of each result folder written by 'ctrobust attack' or "
        "'ctrobust evaluate' and write one report. A .md report links the figures by relative path; a .html "
        "report embeds them and is self-contained.")


def run(args) -> int:
    from ctrobust.app.report import run_report

    path = run_report(spec_from_args(ReportSpec, args))
    print(f"wrote {path}", file=sys.stderr)
    return 0
