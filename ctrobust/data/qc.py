"""Quality control of prepared slices: flagged slices, pixel-size spread, and the QC page.

What a clinician checks before data go into training, done for every ``prepare-dicom`` /
``prepare-volumes`` run:

- :func:`flag_slice`: a slice that is (nearly) constant, or whose pixels are (nearly) all at the window's
  minimum or maximum (a slice outside the body, a window that does not fit the data, a blank frame) is
  flagged; the preparation skips it by default and lists it.
- :func:`spacing_spread`: the output pixel sizes (mm) of the kept slices. One network input should
  have one scale: above :data:`SPACING_WARN_RATIO` (largest / smallest pixel) the run warns, above
  :data:`SPACING_REFUSE_RATIO` it refuses unless allowed (``--allow-mixed-spacing``); ``--fov`` gives
  every slice the same pixel size.
- :func:`write_qc_page`: ``qc.md`` with thumbnails of a sample of slices per split and a pixel-size
  histogram (PNG), read back from the written dataset. It holds no paths, file names or identifiers
  (only split indices and the dataset's pseudonymous keys are available to it).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["MAX_CLIPPED", "SPACING_WARN_RATIO", "SPACING_REFUSE_RATIO", "flag_slice", "spacing_spread",
           "spacing_advice", "write_qc_page", "qc_dir_for"]

#: a slice with at least this fraction of pixels at the window's minimum or maximum is "saturated"
MAX_CLIPPED = 0.99
#: largest / smallest output pixel size above which a run warns
SPACING_WARN_RATIO = 1.1
#: ... and above which it refuses unless mixed pixel sizes are allowed explicitly
SPACING_REFUSE_RATIO = 2.0
_CONSTANT = 1e-6  # intensity range (of [0, 1]) below which a slice is constant
_AT_BOUND = 1e-6  # an intensity this close to 0 or 1 counts as clipped
_SPACING_DECIMALS = 2  # pixel sizes are grouped to 0.01 mm


def qc_dir_for(out: str | os.PathLike) -> Path:
    """The QC folder written beside a dataset: ``DATASET.h5`` -> ``DATASET.qc/`` (``qc.md`` and PNGs)."""
    out = Path(out)
    return out.with_name((out.stem if out.suffix else out.name) + ".qc")


def flag_slice(image: np.ndarray, window: tuple[float, float] | None = None,
               max_clipped: float = MAX_CLIPPED) -> tuple[str | None, str]:
    """``("constant" | "saturated", detail)`` for a slice without usable content, else ``(None, "")``.

    Parameters
    ----------
    image : array (N, N)
        Windowed intensities in [0, 1].
    window : (level, width) or None
        The HU window, only to state its bounds in the detail.
    max_clipped : float
        Fraction of pixels at the window's minimum (0) plus maximum (1) from which a slice is saturated.
    """
    image = np.asarray(image, dtype=np.float64)
    lo_hu = hi_hu = None
    if window is not None:
        lo_hu, hi_hu = window[0] - window[1] / 2.0, window[0] + window[1] / 2.0
    spread = float(image.max() - image.min()) if image.size else 0.0
    if spread < _CONSTANT:
        value = float(image.mean()) if image.size else float("nan")
        where = ""
        if lo_hu is not None:
            where = (f" (at or below {lo_hu:g} HU, the window's minimum)" if value <= _AT_BOUND else
                     f" (at or above {hi_hu:g} HU, the window's maximum)" if value >= 1 - _AT_BOUND else "")
        return "constant", f"every pixel is {value:.4g}{where}"
    low = float(np.mean(image <= _AT_BOUND))
    high = float(np.mean(image >= 1.0 - _AT_BOUND))
    if low + high >= max_clipped:
        bounds = f" ({lo_hu:g} / {hi_hu:g} HU)" if lo_hu is not None else ""
        return "saturated", (f"{100 * low:.1f} % of pixels at the window's minimum and {100 * high:.1f} % at its "
                             f"maximum{bounds}: less than {100 * (1 - max_clipped):.3g} % inside the window")
    return None, ""


def spacing_spread(spacings, names=None, shown: int = 3) -> dict:
    """Summary of output pixel sizes (mm): ``{"min", "max", "ratio", "unknown", "counts", "files"}``.

    ``counts`` maps each size (to 0.01 mm, as text) to its number of slices, largest size first;
    ``files`` maps it to the first ``shown`` distinct ``names`` (one per slice, e.g. input paths) with it.
    ``ratio`` is max / min (1.0 for one size, NaN without known sizes); ``unknown`` counts NaN sizes.
    """
    values = np.asarray(list(spacings), dtype=np.float64)
    known = values[np.isfinite(values)]
    counts: Counter = Counter()
    files: dict = {}
    for k, v in enumerate(values):
        if not math.isfinite(v):
            continue
        key = f"{v:.{_SPACING_DECIMALS}f}"
        counts[key] += 1
        if names is not None:
            bucket = files.setdefault(key, [])
            if len(bucket) < shown and names[k] not in bucket:
                bucket.append(str(names[k]))
    order = sorted(counts, key=float, reverse=True)
    lo, hi = (float(known.min()), float(known.max())) if known.size else (float("nan"), float("nan"))
    return {"min": lo, "max": hi, "ratio": hi / lo if known.size else float("nan"),
            "unknown": int(values.size - known.size), "counts": {k: counts[k] for k in order},
            "files": {k: files.get(k, []) for k in order} if names is not None else {}}


def spacing_advice(spread: dict, command: str = "prepare-dicom") -> str:
    """One paragraph: the pixel sizes of an output, which files have them, and what to do."""
    parts = []
    for key, n in spread["counts"].items():
        names = spread["files"].get(key, [])
        more = n - len(names)
        shown = ", ".join(names) + (f", ... ({n} slices)" if more > 0 else "")
        parts.append(f"{key} mm: {n} slice(s)" + (f" ({shown})" if names else ""))
    return (f"pixel sizes differ within this output: {spread['min']:.3g} to {spread['max']:.3g} mm, a ratio of "
            f"{spread['ratio']:.3g} ({'; '.join(parts)}). A network then sees the same anatomy at different "
            f"scales, and reported errors mix resolutions. Pass --fov MM to `ctrobust {command}` (e.g. --fov 350 for "
            "body CT, 250 for heads) so that every slice covers the same field of view with the same pixel size, "
            "or split the data by scanner protocol")


def _thumbnails(images, titles, path: Path, columns: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _histogram(spacings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(spacings, dtype=np.float64)
    values = values[np.isfinite(values)]
    fig, ax = plt.subplots(figsize=(5, 2.8))
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        bins = np.linspace(lo - 0.05 * max(lo, 1e-3), hi + 0.05 * max(hi, 1e-3), 30) if hi > lo else 10
        ax.hist(values, bins=bins, color="0.3")
    ax.set_xlabel("output pixel size (mm)")
    ax.set_ylabel("slices")
    ax.set_title("pixel size of the kept slices", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_qc_page(dataset: str | os.PathLike, folder: str | os.PathLike, report: dict,
                  samples: int = 12) -> Path:
    """Write ``folder/qc.md`` with ``thumbs_SPLIT.png`` and ``pixel_spacing.png``; returns the page's path.

    Thumbnails show up to ``samples`` slices per split, evenly spaced, titled by split index and the
    dataset's pseudonymous patient key; the histogram all kept slices' pixel sizes. The text gives the
    counts, the pixel sizes, the flagged slices by reason and the options: no path, file name or header
    value (those are in the private JSON log).
    """
    import h5py

    from ctrobust.data.store import SPLITS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# QC of the prepared slices", "",
             "Written by ctrobust with the dataset; no file names, paths or identifiers (those are in the private "
             "JSON log). Intensities are shown as stored: [0, 1] = the HU window, black to white.", ""]
    options = report.get("options", {})
    lines += [f"- window: {options.get('window')} (level {options.get('window_level')} HU, width "
              f"{options.get('window_width')} HU); size {options.get('size')} px; field of view "
              + (f"{options['fov_mm']} mm" if options.get("fov_mm") else "each slice's own longer side")]
    lines += [f"- slices kept: {report.get('slices_kept', 0)}; files used: {report.get('files_used', 0)}; "
              f"files skipped: {len(report.get('skipped', []))}"]
    qc = report.get("qc", {})
    flagged = Counter(s["reason"] for s in qc.get("flagged_slices", []))
    action = "kept (--keep-flagged)" if options.get("keep_flagged") else "skipped"
    lines += [f"- flagged slices ({action}): " + (", ".join(f"{n} {r}" for r, n in sorted(flagged.items()))
                                                  or "none")]
    lines += ["", "| split | patients | series | slices |", "|---|---|---|---|"]
    for split in SPLITS:
        s = report.get("splits", {}).get(split, {})
        lines.append(f"| {split} | {s.get('patients', 0)} | {s.get('series', 0)} | {s.get('slices', 0)} |")
    spacings = []
    with h5py.File(dataset, "r") as f:
        for split in SPLITS:
            g = f[split]
            spacings += g["pixel_spacing"][:].tolist()
            n = int(g["images"].shape[0])
            if n == 0:
                lines += ["", f"## {split}", "", "empty"]
                continue
            rows = np.unique(np.linspace(0, n - 1, min(n, samples)).round().astype(int))
            images = [g["images"][int(i)] for i in rows]
            keys = [g["patient"][int(i)].decode("ascii")[:6] for i in rows]
            name = f"thumbs_{split}.png"
            _thumbnails(images, [f"{split}[{i}] {k}" for i, k in zip(rows, keys)], folder / name)
            lines += ["", f"## {split}", "", f"{len(rows)} of {n} slices, evenly spaced (title: index, first 6 "
                      "characters of the pseudonymous patient key)", "", f"![{split} slices]({name})"]
    spread = spacing_spread(spacings)
    _histogram(spacings, folder / "pixel_spacing.png")
    lines += ["", "## Pixel size", ""]
    if spread["counts"]:
        lines += [f"{spread['min']:.3g} to {spread['max']:.3g} mm (ratio {spread['ratio']:.3g})"
                  + (f"; {spread['unknown']} slice(s) without a known size" if spread["unknown"] else ""), "",
                  "| mm per pixel | slices |", "|---|---|"]
        lines += [f"| {k} | {n} |" for k, n in spread["counts"].items()]
    else:
        lines.append(f"unknown for all {spread['unknown']} slices")
    lines += ["", "![pixel size histogram](pixel_spacing.png)", ""]
    page = folder / "qc.md"
    page.write_text("\n".join(lines))
    return page
