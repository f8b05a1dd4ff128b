"""``run_report``: one Markdown or HTML report of result folders (``ctrobust report``), a layer over
:func:`ctrobust.evaluation.report.build_report`."""

from __future__ import annotations

from pathlib import Path

from ctrobust.app.specs import ReportSpec

__all__ = ["run_report"]


def run_report(spec: ReportSpec) -> Path:
    """Write the report ``spec.out`` of the folders ``spec.results``; returns its path."""
    from ctrobust.evaluation.report import build_report

    return build_report(list(spec.results), spec.out, force=spec.force)
