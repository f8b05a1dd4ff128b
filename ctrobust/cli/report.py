"""``ctrobust report``: one Markdown or HTML report of several result folders (attack / evaluate)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers):
    p = subparsers.add_parser(
        "report",
        help="collect the tables and figures of result folders into one Markdown or HTML report",
        description="Read summary.json and the PNG figures of each result folder written by 'ctrobust attack' or "
        "'ctrobust evaluate' and write one report. A .md report links the figures by relative path; a .html "
        "report embeds them and is self-contained.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="result folders (each with a summary.json)")
    p.add_argument("--out", default="report.md", metavar="REPORT.md|REPORT.html",
                   help="report file; the suffix picks the format (.md Markdown, .html self-contained HTML)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report file")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ctrobust.report import build_report

    path = build_report(args.results, args.out, force=args.force)
    print(f"wrote {path}", file=sys.stderr)
    return 0
