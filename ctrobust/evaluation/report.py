"""Results on disk: CSV/JSON tables, PNG figures and a Markdown/HTML report of several result folders.

Files are written atomically (a temporary file beside the target, then ``os.replace``), so an
interrupted run never leaves a half-written table. Figures use matplotlib's Agg backend.

A *result folder* (written by ``ctrobust attack`` or ``ctrobust evaluate``) holds ``summary.json``
(``{"command", "config", "models", "summary", ...}``), CSV tables and PNG figures;
:func:`build_report` collects several of them into one document.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ctrobust.errors import CtrobustError
from ctrobust.files import atomic_write, prepare_output_dir, write_text

__all__ = [
    "write_csv",
    "write_json",
    "read_csv",
    "prepare_output_dir",
    "format_table",
    "attack_table",
    "plot_robustness_curves",
    "plot_gallery",
    "plot_training_curves",
    "training_runs",
    "build_report",
    "SUMMARY_FILE",
]

SUMMARY_FILE = "summary.json"


# -- files ----------------------------------------------------------------------------------------


def _atomic(path: str | os.PathLike, write: Callable[[io.IOBase], None], mode: str) -> Path:
    """Open a temporary file beside ``path`` in ``mode`` for ``write(fh)``, then rename it (:mod:`ctrobust.files`)."""

    def fill(tmp: Path) -> None:
        with open(tmp, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {})) as fh:
            write(fh)

    return atomic_write(path, fill)


def _columns(rows: Sequence[Mapping]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def write_csv(rows: Sequence[Mapping], path: str | os.PathLike, columns: Sequence[str] | None = None) -> Path:
    """Write a list of dicts as CSV (header = ``columns`` or the union of keys, first-seen order)."""
    cols = list(columns) if columns is not None else _columns(rows)

    def write(fh):
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore", restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})

    return _atomic(path, write, "w")


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Read a CSV written by :func:`write_csv`; numeric cells become floats."""

    def conv(v: str):
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: conv(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch tensors
        return _jsonable(obj.tolist())
    return obj


def write_json(obj, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON (numpy scalars converted, non-finite floats as null)."""
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return write_text(path, text)


def _cells(rows: Sequence[Mapping], columns: Sequence[str], digits: int = 4) -> list[list[str]]:
    """The table's cells as text: floats to ``digits`` significant digits, None as empty."""

    def cell(v):
        if v is None or v == "":
            return ""
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        return str(v)

    return [[cell(r.get(c)) for c in columns] for r in rows]


def _markdown_cell(text: str) -> str:
    """One Markdown table cell: pipes escaped (a bare ``|``, as in ``||J||``, would split the cell) and line
    breaks turned into spaces (a table row is one line)."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())


def format_table(rows: Sequence[Mapping], columns: Sequence[str], *, style: str = "text", digits: int = 4) -> str:
    """Render rows as an aligned text table (``style="text"``) or a Markdown table (``"markdown"``, cells with
    ``|`` escaped so that every row keeps its columns)."""

    body = _cells(rows, columns, digits)
    if style == "markdown":
        lines = ["| " + " | ".join(map(_markdown_cell, columns)) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(map(_markdown_cell, b)) + " |" for b in body]
        return "\n".join(lines)
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# -- figures --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return _atomic(path, lambda fh: fh.write(buf.getvalue()), "wb")


def _curve(summary: Iterable[Mapping], metric: str, condition: str):
    rows = sorted((r for r in summary if r.get("condition") == condition and f"{metric}_mean" in r), key=lambda r: r["eps"])
    return (np.array([r["eps"] for r in rows], dtype=float), np.array([r[f"{metric}_mean"] for r in rows], dtype=float),
            np.array([r.get(f"{metric}_std", 0.0) for r in rows], dtype=float))


METRIC_LABELS = {
    "relative_error": "relative error ||f - x|| / ||x||",
    "mse": "MSE",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "sq_error": "||f - x||^2",
    "deviation": "||f(y + d) - f(y)||^2",
}


def plot_robustness_curves(
    summaries: Mapping[str, Sequence[Mapping]],
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] = ("relative_error", "psnr"),
    reference: Sequence[str] = ("FBP",),
    relative: bool = True,
    title: str | None = None,
) -> Path:
    """Error vs eps, one line per model: attacked (solid) and random noise of the same norm (dashed).

    With a ``dose`` condition (measurement noise, :func:`ctrobust.evaluation.robustness.robustness_curve` with
    ``noise``) a dotted horizontal line marks the error the noise itself causes and a star puts it at
    the noise's relative size ``||y - A x|| / ||A x||`` on the eps axis.

    Parameters
    ----------
    summaries : mapping label -> summary rows
        Rows with ``eps``, ``condition`` and ``<metric>_mean`` / ``<metric>_std`` (as in
        :attr:`ctrobust.evaluation.robustness.RobustnessResult.summary`).
    path : path-like
        The PNG to write.
    metrics : sequence of str
        One panel per metric.
    reference : sequence of str
        Labels drawn as black reference lines (FBP).
    relative : bool
        Axis label: eps relative to ``||y||`` or absolute.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    k = 0
    for label, summary in summaries.items():
        is_ref = label in reference
        color = "black" if is_ref else colors[k % len(colors)]
        k += 0 if is_ref else 1
        for ax, metric in zip(axes[0], metrics):
            eps, mean, std = _curve(summary, metric, "attack")
            if len(eps):
                ax.plot(eps, mean, "-o", color=color, lw=2 if is_ref else 1.5, ms=4, label=f"{label} (attack)")
                ax.fill_between(eps, mean - std, mean + std, color=color, alpha=0.12, lw=0)
            eps, mean, _ = _curve(summary, metric, "random")
            if len(eps):
                ax.plot(eps, mean, "--", color=color, lw=1, label=f"{label} (random)")
            dose = [r for r in summary if r.get("condition") == "dose" and f"{metric}_mean" in r]
            if dose:  # the measurement noise itself: its error, placed at its size on the eps axis
                value = float(dose[0][f"{metric}_mean"])
                ax.axhline(value, color=color, ls=":", lw=1)
                if relative and "noise_level_mean" in dose[0]:
                    ax.plot([float(dose[0]["noise_level_mean"])], [value], "*", color=color, ms=10,
                            label=f"{label} (dose noise)")
    for ax, metric in zip(axes[0], metrics):
        ax.set_xlabel("eps (fraction of ||y||_2)" if relative else "eps (absolute l2 radius)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _show(ax, img, title, **kw):
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if img is None:
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
        return None
    img = np.asarray(img, dtype=float)
    if img.ndim == 1:
        ax.plot(img, lw=0.6)
        return None
    return ax.imshow(img, **kw)


def plot_gallery(rows: Sequence[Mapping], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """One row per model: truth, FBP, clean and attacked reconstructions, the perturbation, error maps.

    Parameters
    ----------
    rows : sequence of mappings
        Each with ``label`` and 2-D arrays ``truth``, ``fbp`` (or None), ``clean``, ``attack``
        (``(N, N)``, [0, 1] scale) and ``delta`` (the measurement perturbation: ``(A, D)`` sinogram
        or ``(m,)`` vector, plotted as a line).
    path : path-like
        The PNG to write.
    """
    plt = _pyplot()
    cols = ("truth", "FBP", "clean recon.", "attacked recon.", "perturbation", "|clean - truth|", "|attacked - truth|")
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.1 * len(cols), 2.3 * len(rows) + 0.4), squeeze=False)
    err_max = max(float(np.abs(np.asarray(r["attack"]) - np.asarray(r["truth"])).max()) for r in rows) or 1.0
    for i, r in enumerate(rows):
        truth = np.asarray(r["truth"])
        gray = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
        _show(axes[i][0], truth, "truth", **gray)
        _show(axes[i][1], r.get("fbp"), "FBP", **gray)
        _show(axes[i][2], r["clean"], "clean recon.", **gray)
        _show(axes[i][3], r["attack"], "attacked recon.", **gray)
        delta = np.asarray(r["delta"])
        lim = float(np.abs(delta).max()) or 1.0
        im = _show(axes[i][4], delta, "perturbation", cmap="seismic", vmin=-lim, vmax=lim, aspect="auto")
        if im is not None:
            fig.colorbar(im, ax=axes[i][4], fraction=0.046, pad=0.02)
        _show(axes[i][5], np.abs(np.asarray(r["clean"]) - truth), "|clean - truth|", cmap="magma", vmin=0, vmax=err_max)
        im = _show(axes[i][6], np.abs(np.asarray(r["attack"]) - truth), "|attacked - truth|", cmap="magma", vmin=0, vmax=err_max)
        fig.colorbar(im, ax=axes[i][6], fraction=0.046, pad=0.02)
        axes[i][0].set_ylabel(str(r["label"]), fontsize=10)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


TRAINING_LOGS = ("steps.csv", "validation.csv")


def training_runs(models: Sequence[Mapping], base: Path | None = None) -> dict[str, Path]:
    """The training run folders of a result's models: label -> the folder of each checkpoint (``source``)
    that holds the trainer's ``steps.csv`` or ``validation.csv``. A relative ``source`` is looked up from the
    working directory, then from ``base`` (the result folder); models without logs (FBP, methods) are left out."""
    runs: dict[str, Path] = {}
    for m in models:
        source = str(m.get("source") or "")
        if not source or source.startswith("method:"):
            continue
        for candidate in ([Path(source)] + ([base / source] if base is not None and not Path(source).is_absolute() else [])):
            folder = candidate.parent
            if candidate.is_file() and any((folder / name).is_file() for name in TRAINING_LOGS):
                runs[str(m.get("label") or folder.name)] = folder
                break
    return runs


def plot_training_curves(runs: Mapping[str, str | os.PathLike], path: str | os.PathLike) -> Path:
    """The training curves of training run folders, one line per run: the training loss of ``steps.csv``
    against the optimiser step (left) and the validation relative error of ``validation.csv`` (right, MSE
    when the relative error is missing). A run without a file leaves its panel line out."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.6), squeeze=False)
    left, right = axes[0]
    for label, folder in runs.items():
        folder = Path(folder)
        if (folder / "steps.csv").is_file():
            rows = [r for r in read_csv(folder / "steps.csv") if isinstance(r.get("loss"), float)]
            if rows:
                left.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1, label=label)
        if (folder / "validation.csv").is_file():
            rows = read_csv(folder / "validation.csv")
            key = next((k for k in ("val_relative_error", "val_mse") if rows and isinstance(rows[0].get(k), float)), None)
            if key:
                right.plot([r["step"] for r in rows], [r[key] for r in rows], "-o", ms=3, lw=1.2,
                           label=f"{label} ({key[4:].replace('_', ' ')})")
    left.set_title("training loss (steps.csv)", fontsize=10)
    right.set_title("validation (validation.csv)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    left.set_yscale("log")
    return _save(fig, path)


# -- the report -----------------------------------------------------------------------------------


def attack_table(summary: Sequence[Mapping]) -> tuple[list[dict], list[str]]:
    """One row per (model, eps) with clean / random / attack columns of the main metrics."""
    table: dict[tuple, dict] = {}
    for r in summary:
        key = (r.get("model", ""), r["eps"])
        row = table.setdefault(key, {"model": key[0], "eps": key[1]})
        cond = r["condition"]
        for metric, short in (("relative_error", "rel.err"), ("psnr", "PSNR"), ("ssim", "SSIM")):
            if f"{metric}_mean" in r:
                row[f"{short} {cond}"] = r[f"{metric}_mean"]
        if cond == "dose" and "noise_level_mean" in r:  # the measurement noise's size, relative to ||A x||
            row["noise level"] = r["noise_level_mean"]
        if cond == "attack":  # the attack's diagnostics and the worst cases it is compared with
            for metric, short in (("exact_relative_error", "rel.err exact"), ("attack_over_exact", "attack/exact"),
                                  ("first_order_relative_error", "rel.err 1st-order"), ("jacobian_norm", "||J||"),
                                  ("converged", "converged"), ("restart_spread", "restart spread")):
                if f"{metric}_mean" in r and not (metric == "first_order_relative_error" and "exact_relative_error_mean" in r):
                    row[short] = r[f"{metric}_mean"] if metric != "attack_over_exact" else r.get(f"{metric}_min", r[f"{metric}_mean"])
    rows = list(table.values())
    cols = _columns(rows)
    return rows, cols


def _read_result(folder: Path) -> dict:
    summary = folder / SUMMARY_FILE
    if not folder.is_dir():
        raise CtrobustError(f"{folder} is not a folder; pass result folders written by 'ctrobust attack' or 'ctrobust evaluate'")
    if not summary.is_file():
        raise CtrobustError(f"{folder} has no {SUMMARY_FILE}; is it a result folder of 'ctrobust attack' or 'ctrobust evaluate'?")
    try:
        with open(summary, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise CtrobustError(f"cannot read {summary}: {exc}") from exc


def _blocks(folders: Sequence[Path]) -> list[tuple]:
    blocks: list[tuple] = [("h1", "ctrobust results")]
    runs: dict[str, Path] = {}
    for folder in folders:
        data = _read_result(folder)
        command = data.get("command", "?")
        blocks.append(("h2", f"{folder.name} ({command})"))
        config = data.get("config", {})
        if config:
            blocks.append(("p", "; ".join(f"{k} = {v}" for k, v in config.items() if not isinstance(v, dict))))
        models = data.get("models", [])
        if models:
            blocks.append(("table", [{"model": m.get("label"), "source": m.get("source")} for m in models], ["model", "source"]))
        summary = data.get("summary", [])
        if summary and command == "attack":
            rows, cols = attack_table(summary)
            blocks.append(("p", "Mean over samples; eps relative to ||y||_2 unless config says relative = False; "
                                "'random' is Gaussian noise of the same norm, 'attack' the worst case found by the attack (APGD by default)."))
            blocks.append(("table", rows, cols))
        elif summary:
            cols = [c for c in _columns(summary) if not c.endswith("_std")]
            blocks.append(("table", summary, cols))
        shift = data.get("shift") or []
        if shift:  # ctrobust evaluate --shift
            blocks.append(("p", "Distribution shift: SSIM in distribution, shifted, and after test-time training; "
                                "gap closed = (SSIM_ttt - SSIM_shifted) / (SSIM_in_dist - SSIM_shifted)."))
            blocks.append(("table", shift, _columns(shift)))
        features = (data.get("features") or {}).get("summary") or []
        if features:  # ctrobust evaluate --small-features
            blocks.append(("p", "Small features: inserted disks recovered (detected), clean and under attack."))
            blocks.append(("table", features, [c for c in _columns(features) if not c.endswith("_std")]))
        for png in sorted(folder.glob("*.png")):
            if _is_png_file(png):
                blocks.append(("img", png))
        for label, run in training_runs(models, folder).items():
            if run not in runs.values():  # a checkpoint in several result folders: drawn once
                runs[label if label not in runs else f"{label} ({folder.name})"] = run
    if runs:
        blocks.append(("h2", "training"))
        blocks.append(("p", "Training curves of the checkpoints above (their run folders' steps.csv and validation.csv)."))
        blocks.append(("training", runs))
    return blocks


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png_file(path: Path) -> bool:
    """A regular file (not a link: it could point anywhere) that starts with the PNG signature."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        with open(path, "rb") as fh:
            return fh.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def _markdown_link_target(rel: str) -> str:
    """A relative path as a Markdown link target: percent-encoded (spaces, non-ASCII, brackets, ...)."""
    from urllib.parse import quote

    return quote(rel, safe="/")


def _markdown_text(text: str, special: str = "\\`*_[]<>") -> str:
    """Text for a Markdown heading or link label, with the characters in ``special`` escaped."""
    return "".join("\\" + c if c in special else c for c in text)


def _markdown(blocks, out: Path) -> str:
    parts = []
    for b in blocks:
        if b[0] == "h1":
            parts.append(f"# {b[1]}")
        elif b[0] == "h2":
            parts.append(f"## {_markdown_text(b[1])}")
        elif b[0] == "p":
            parts.append(b[1])
        elif b[0] == "table":
            parts.append(format_table(b[1], b[2], style="markdown"))
        elif b[0] == "img" or b[0] == "training":
            if b[0] == "training":  # a figure of its own beside the report
                b = ("img", b[2])
            rel = os.path.relpath(b[1], out.parent).replace(os.sep, "/")
            label = _markdown_text(b[1].stem, "\\[]")
            parts.append(f"![{label}]({_markdown_link_target(rel)})")
    return "\n\n".join(parts) + "\n"


def _html(blocks) -> str:
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>ctrobust results</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        if b[0] in ("h1", "h2"):
            parts.append(f"<{b[0]}>{html.escape(b[1])}</{b[0]}>")
        elif b[0] == "p":
            parts.append(f"<p>{html.escape(b[1])}</p>")
        elif b[0] == "table":
            rows, cols = b[1], b[2]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>"
                           for line in _cells(rows, cols))
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif b[0] in ("img", "training"):
            if b[0] == "training":
                b = ("img", b[2])
            data = base64.b64encode(b[1].read_bytes()).decode("ascii")
            parts.append(f"<p><img alt='{html.escape(b[1].stem)}' src='data:image/png;base64,{data}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _training_figures(blocks: list[tuple], out: Path, force: bool) -> list[tuple]:
    """Draw each ``training`` block's curves into ``<report stem>.training<k>.png`` beside the report (refused
    when one exists, unless ``force``); the block then carries the figure's path."""
    wanted = [i for i, b in enumerate(blocks) if b[0] == "training"]
    paths = [out.with_name(f"{out.stem}.training{k + 1 if len(wanted) > 1 else ''}.png") for k in range(len(wanted))]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise CtrobustError(f"{existing[0]} already exists; pass force=True to overwrite it")
    blocks = list(blocks)
    for i, path in zip(wanted, paths):
        plot_training_curves(blocks[i][1], path)
        blocks[i] = ("training", blocks[i][1], path)
    return blocks


def build_report(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False) -> Path:
    """One Markdown (``.md``) or self-contained HTML (``.html``, figures embedded) report of result folders.

    Markdown refers to the figures by paths relative to the report, percent-encoded (folder names with
    spaces or non-ASCII letters give working links). Checkpoints whose run folders hold training logs get a
    figure of their training curves, ``<report stem>.training.png`` beside the report (embedded in HTML). Only regular PNG files are linked or embedded: a
    symbolic link, or a ``.png`` without the PNG signature, is left out. Refuses an existing ``out``
    unless ``force``.
    """
    out = Path(out)
    if out.suffix.lower() not in (".md", ".html", ".htm"):
        raise CtrobustError(f"report name must end in .md or .html, got {out.name!r}")
    if out.exists() and not force:
        raise CtrobustError(f"{out} already exists; pass force=True to overwrite it")
    if not folders:
        raise CtrobustError("give at least one result folder")
    blocks = _blocks([Path(f) for f in folders])
    blocks = _training_figures(blocks, out, force)
    text = _markdown(blocks, out.resolve()) if out.suffix.lower() == ".md" else _html(blocks)
    return write_text(out, text)
