"""The robustness leaderboard: one row per model from its attack result, written as CSV, JSON, Markdown and HTML.

A row is built from what ``ctrobust attack`` wrote for one model (its ``summary.json`` summary and verification
tables, :func:`model_row`) plus the costs the benchmark measured. Columns (:func:`columns`):

- ``clean_relative_error`` / ``clean_psnr`` / ``clean_ssim``: ``f(A x)`` against ``x`` (the ``clean`` condition);
- ``dose_relative_error``: ``f(y)`` on the protocol's noisy measurement alone (the ``dose`` condition; empty
  for a noise-free protocol);
- ``attack_relative_error@EPS`` per eps > 0 of the grid: the attacked error (the ``attack`` condition, radius
  ``EPS * ||y||_2`` per sample);
- ``verify_ratio``: the smallest over eps of the mean ratio default / strong attack's squared error (1.0: the
  protocol's attack found what the much stronger one found);
- ``restart_spread``: the largest over eps of the mean gap between the two best independent restarts;
- ``jacobian_norm``: mean ``||J_f(y)||_2`` (empty for TV, whose Jacobian is not estimated);
- ``train_steps``, ``train_s_per_step``, ``train_total_s``: optimiser steps and their seconds (steps only,
  not validation); ``attack_s``: wall seconds of the model's attack (curve, Jacobian norms and verification).

Rows are ranked by the attacked error at the ranking eps (the grid's largest unless given), ascending. Markdown
cells escape ``|`` (and line breaks become spaces) so the table renders; the HTML page is self-contained
(figures embedded).
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from ctrobust.evaluation.report import write_csv, write_json
from ctrobust.files import write_text

__all__ = ["model_row", "columns", "rank_rows", "markdown_table", "markdown_page", "html_page", "attack_column",
           "COLUMN_LABELS", "LEADERBOARD_FILES", "write_leaderboard"]

#: the files :func:`write_leaderboard` writes (besides the figures it is given)
LEADERBOARD_FILES = ("leaderboard.csv", "leaderboard.json", "leaderboard.md", "leaderboard.html")

#: human headers of the Markdown / HTML tables (CSV and JSON keep the column names)
COLUMN_LABELS = {
    "rank": "#", "model": "model", "kind": "kind", "clean_relative_error": "clean rel. err.",
    "clean_psnr": "clean PSNR (dB)", "clean_ssim": "clean SSIM", "dose_relative_error": "dose rel. err.",
    "verify_ratio": "verify ratio", "restart_spread": "restart spread", "jacobian_norm": "||J||",
    "train_steps": "train steps", "train_s_per_step": "s/step", "train_total_s": "train s", "attack_s": "attack s",
}


def attack_column(eps: float) -> str:
    """The column of the attacked relative error at ``eps`` (``attack_relative_error@0.01``)."""
    return f"attack_relative_error@{float(eps):g}"


def _mean(rows: Sequence[Mapping], condition: str, metric: str, eps: float | None = None):
    for r in rows:
        if r.get("condition") == condition and (eps is None or math.isclose(float(r["eps"]), eps)):
            value = r.get(f"{metric}_mean")
            return None if value is None else float(value)
    return None


def model_row(label: str, summary: Sequence[Mapping], eps_grid: Sequence[float],
              verification: Sequence[Mapping] = ()) -> dict:
    """The leaderboard's measurement columns of one model from its attack ``summary`` rows (per eps and
    condition, with ``<metric>_mean``) and ``verification`` rows (``ratio_mean`` per eps)."""
    row = {"model": label,
           "clean_relative_error": _mean(summary, "clean", "relative_error"),
           "clean_psnr": _mean(summary, "clean", "psnr"),
           "clean_ssim": _mean(summary, "clean", "ssim"),
           "dose_relative_error": _mean(summary, "dose", "relative_error")}
    for eps in sorted(float(e) for e in eps_grid if e > 0):
        row[attack_column(eps)] = _mean(summary, "attack", "relative_error", eps)
    ratios = [float(v["ratio_mean"]) for v in verification if v.get("ratio_mean") is not None]
    row["verify_ratio"] = min(ratios) if ratios else None
    spreads = [float(r["restart_spread_mean"]) for r in summary
               if r.get("condition") == "attack" and r.get("restart_spread_mean") is not None and float(r["eps"]) > 0]
    row["restart_spread"] = max(spreads) if spreads else None
    row["jacobian_norm"] = _mean(summary, "clean", "jacobian_norm")
    return row


def columns(eps_grid: Sequence[float], extra: Sequence[str] = ()) -> list[str]:
    """The leaderboard's columns in order: rank, model, kind, the measurements, costs, then ``extra``."""
    attacked = [attack_column(e) for e in sorted(float(e) for e in eps_grid if e > 0)]
    return (["rank", "model", "kind", "clean_relative_error", "clean_psnr", "clean_ssim", "dose_relative_error",
             *attacked, "verify_ratio", "restart_spread", "jacobian_norm", "train_steps", "train_s_per_step",
             "train_total_s", "attack_s"] + list(extra))


def rank_rows(rows: Sequence[Mapping], rank_eps: float) -> list[dict]:
    """``rows`` sorted by the attacked error at ``rank_eps`` (then the clean error), numbered from 1; rows
    without that error come last."""
    key = attack_column(rank_eps) if rank_eps > 0 else "clean_relative_error"

    def order(r):
        v = r.get(key)
        c = r.get("clean_relative_error")
        return (v is None, v if v is not None else 0.0, c if c is not None else math.inf, str(r.get("model")))

    return [{"rank": i, **r} for i, r in enumerate(sorted(rows, key=order), 1)]


def _label(column: str) -> str:
    if column.startswith("attack_relative_error@"):
        return f"attacked rel. err. eps {column.split('@', 1)[1]}"
    return COLUMN_LABELS.get(column, column)


def _cell(value, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.{digits}g}"
    return str(value)


def _markdown_cell(text: str) -> str:
    """A Markdown table cell: ``|`` and ``\\`` escaped, line breaks as spaces."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())


def markdown_table(rows: Sequence[Mapping], cols: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (every cell escaped, numbers to 4 significant digits)."""
    lines = ["| " + " | ".join(_markdown_cell(_label(c)) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(_cell(r.get(c))) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _notes(meta: Mapping) -> list[str]:
    """The lines above the table: protocol, fingerprint, settings, whether the attack budget is verified."""
    attack = meta.get("attack", {})
    extend = attack.get("extend")
    continuations = ("" if extend is None else "no continuations" if extend == 0 else
                     f"up to {extend} continuation(s) per eps while a sample still rises")
    verification = (f"verification {attack.get('verify_steps')} steps x {attack.get('verify_restarts')} restarts on "
                    f"{attack.get('verify')} sample(s)" if attack.get("verify") else "no verification")
    lines = [f"Protocol **{meta.get('protocol')}**, fingerprint `{meta.get('fingerprint')}`, "
             f"{meta.get('size')} x {meta.get('size')} px.",
             f"Geometry: {meta.get('geometry_text', '')}. Dose: {meta.get('dose_text', '')}.",
             f"Attack: {attack.get('attack', '').upper()} {attack.get('steps')} steps x {attack.get('restarts')} "
             f"restart(s) per eps{', ' + continuations if continuations else ''}, eps relative to ||y||_2 per "
             f"sample; {verification}; {meta.get('n_samples')} test sample(s); seed {meta.get('seed')}."]
    if not meta.get("verified", False):
        lines.append("**Not verified**: " + str(meta.get("not_verified_reason", "the attack budget is below the "
                                                                             "protocol's verified budget")) + ".")
    lines.append(f"Ranked by the attacked relative error at eps {meta.get('rank_eps'):g} (lower is better).")
    return lines


def markdown_page(rows: Sequence[Mapping], cols: Sequence[str], meta: Mapping,
                  figures: Sequence[tuple[str, str]] = ()) -> str:
    """The leaderboard as a Markdown page: notes, the table, then the figures (``(title, relative path)``)."""
    from urllib.parse import quote

    def label(text: str) -> str:
        return "".join("\\" + c if c in "\\[]" else c for c in text)

    parts = [f"# Leaderboard: {_markdown_cell(str(meta.get('protocol')))}", *_notes(meta), markdown_table(rows, cols)]
    parts += [f"![{label(title)}]({quote(rel, safe='/')})" for title, rel in figures]
    return "\n\n".join(parts) + "\n"


def html_page(rows: Sequence[Mapping], cols: Sequence[str], meta: Mapping,
              figures: Sequence[tuple[str, Path]] = ()) -> str:
    """A self-contained HTML page: notes, the table and the figures (``(title, png path)``, embedded)."""
    import re

    def inline(text: str) -> str:  # the notes' **bold** and `code`, escaped
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>ctrobust leaderboard: {html.escape(str(meta.get('protocol')))}</title>",
             "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:nth-child(2),td:nth-child(3)"
             "{text-align:left}img{max-width:100%}</style></head><body>",
             f"<h1>Leaderboard: {html.escape(str(meta.get('protocol')))}</h1>"]
    parts += [f"<p>{inline(line)}</p>" for line in _notes(meta)]
    head = "".join(f"<th>{html.escape(_label(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    parts.append(f"<table><tr>{head}</tr>{body}</table>")
    for title, path in figures:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(title)}</h2><p><img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{data}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_leaderboard(out: str | os.PathLike, rows: Sequence[Mapping], cols: Sequence[str], meta: Mapping,
                      figures: Sequence[tuple[str, Path]] = (), details: Mapping | None = None) -> list[Path]:
    """Write ``leaderboard.{csv,json,md,html}`` into ``out`` (atomically); returns their paths.

    ``meta`` (protocol, fingerprint, geometry, dose, attack settings, ...) heads the JSON and the pages;
    ``figures`` are ``(title, png path)`` pairs (linked relative to ``out`` in Markdown, embedded in HTML);
    ``details`` (per-model records) go into the JSON beside the rows.
    """
    out = Path(out)
    rel = [(title, os.path.relpath(p, out).replace(os.sep, "/")) for title, p in figures]
    written = [write_csv([{c: r.get(c) for c in cols} for r in rows], out / "leaderboard.csv", list(cols)),
               write_json({**dict(meta), "columns": list(cols), "rows": [dict(r) for r in rows],
                           "models": dict(details or {})}, out / "leaderboard.json"),
               write_text(out / "leaderboard.md", markdown_page(rows, cols, meta, rel)),
               write_text(out / "leaderboard.html", html_page(rows, cols, meta, figures))]
    return written
