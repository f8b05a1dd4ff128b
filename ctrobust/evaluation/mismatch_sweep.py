"""Operator mismatch as a threat model: reconstructions trained with ``A`` on data from a perturbed scanner ``A'``.

For each reconstruction ``f`` (built for the nominal ``A``) and each mismatch of a grid
(:class:`~ctrobust.operators.mismatch.MismatchedRadon`: angle offset, detector shift, per-detector gains,
missing views), the test images are measured with ``A'`` (and, optionally, low-dose noise) and
reconstructed by ``f``. Per sample the table holds the usual metrics and

``y_perturbation = ||(A' - A) x||_2 / ||A x||_2``,

the size of the equivalent measurement perturbation in the unit of the attack's ``eps`` (relative to
``||y||_2``), so a mismatch and a worst-case perturbation can be read on one axis. The *worst case* is taken
over a small product grid of signed mismatch parameters (:func:`worst_case_grid`): per sample the largest
error over the grid, and the single grid point with the largest mean error.

Units: angle offsets in degrees in the grid and the tables (``angle_offset_deg``; the operator takes
radians), detector shifts in pixels (bins), gains as the standard deviation of ``g_j - 1``, missing views
as a count.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np
import torch

from ctrobust.evaluation.metrics import all_metrics, mean_std

__all__ = ["MISMATCH_KINDS", "DEFAULT_MISMATCH_GRID", "mismatch_operator", "mismatch_sweep", "worst_case_grid",
           "summarize_mismatch"]

MISMATCH_KINDS = ("angle", "shift", "gain", "views")
#: default sizes per kind: degrees, pixels, gain std (fraction), missing views (count)
DEFAULT_MISMATCH_GRID = {"angle": (0.1, 0.25, 0.5, 1.0), "shift": (0.25, 0.5, 1.0, 2.0),
                         "gain": (0.005, 0.01, 0.02, 0.05), "views": (1, 2, 4, 8)}
_PARAM = {"angle": "angle_offset_deg", "shift": "detector_shift", "gain": "gain_std", "views": "missing_views"}
_METRICS = ("relative_error", "psnr", "ssim", "mse", "y_perturbation")


def mismatch_operator(operator, *, angle_offset_deg: float = 0.0, detector_shift: float = 0.0,
                      gain_std: float = 0.0, missing_views: int = 0, seed: int = 0):
    """``A'`` of ``operator`` with these mismatches (angle offset in degrees)."""
    from ctrobust.operators.mismatch import MismatchedRadon

    return MismatchedRadon(operator, angle_offset=math.radians(angle_offset_deg), detector_shift=detector_shift,
                           gain_std=gain_std, missing_views=int(missing_views), seed=seed)


def _measure(op, images, noise, seed):
    from ctrobust.operators.noise import apply_noise

    x = images.reshape(images.shape[0], *op.domain_shape)
    with torch.no_grad():
        y_free = op(x)
    return y_free, apply_noise(y_free, noise, seed=seed, operator=op)


def _reconstruct(f, y, batch_size):
    outs = []
    was_training = getattr(f, "training", False)
    if hasattr(f, "eval"):
        f.eval()
    with torch.no_grad():
        for i in range(0, y.shape[0], batch_size):
            outs.append(f(y[i:i + batch_size]).detach())
    if was_training:
        f.train()
    return torch.cat(outs)


def _evaluate(models, nominal, op, images, params: dict, noise, seed, batch_size, y_nominal) -> list[dict]:
    y_free, y = _measure(op, images, noise, seed)
    dy = ((y_free - y_nominal).flatten(1).double().norm(dim=1) /
          y_nominal.flatten(1).double().norm(dim=1).clamp_min(1e-300)).cpu().numpy()
    rows = []
    for label, f in models.items():
        rec = _reconstruct(f, y, batch_size)
        m = all_metrics(rec.reshape(images.shape), images)
        for i in range(images.shape[0]):
            rows.append({"model": label, **params, "sample": i, "y_perturbation": float(dy[i]),
                         **{k: float(v[i]) for k, v in m.items()}})
    return rows


def mismatch_sweep(models: Mapping[str, object], operator, images: torch.Tensor, *,
                   grid: Mapping[str, Sequence[float]] | None = None, seed: int = 0, noise=None,
                   batch_size: int = 8) -> list[dict]:
    """Per-sample rows of every model on every single mismatch of ``grid`` (and on ``A`` itself).

    Parameters
    ----------
    models : mapping label -> reconstruction
        ``f(y)``, sinograms ``(B, 1, A, D)`` of ``operator`` -> images ``(B, 1, N, N)``.
    operator : RadonTransform
        The nominal ``A``.
    images : torch.Tensor
        Test images ``(B, 1, N, N)`` in [0, 1].
    grid : mapping kind -> sizes
        Kinds of :data:`MISMATCH_KINDS`; default :data:`DEFAULT_MISMATCH_GRID`. Each size is applied
        alone (the others zero); angle offsets and shifts with a positive sign.
    seed : int
        Seed of the gains, the missing views and the measurement noise.
    noise : callable, optional
        Measurement noise (e.g. :class:`ctrobust.operators.noise.LogPoissonNoise`) applied to ``A' x``.

    Returns
    -------
    list of dict
        ``model``, ``kind`` ("none" for ``A``), ``size``, the four parameters, ``sample``, metrics and
        ``y_perturbation``.
    """
    grid = dict(DEFAULT_MISMATCH_GRID if grid is None else grid)
    unknown = set(grid) - set(MISMATCH_KINDS)
    if unknown:
        raise ValueError(f"unknown mismatch kinds {sorted(unknown)}; choose from {', '.join(MISMATCH_KINDS)}")
    with torch.no_grad():
        y_nominal = operator(images.reshape(images.shape[0], *operator.domain_shape))
    zero = {p: 0.0 for p in _PARAM.values()}
    rows = _evaluate(models, operator, operator, images, {"kind": "none", "size": 0.0, **zero}, noise, seed,
                     batch_size, y_nominal)
    for kind, sizes in grid.items():
        for size in sizes:
            params = {**zero, _PARAM[kind]: float(size)}
            op = mismatch_operator(operator, seed=seed, **params).to(images.device)
            rows += _evaluate(models, operator, op, images, {"kind": kind, "size": float(size), **params}, noise,
                              seed, batch_size, y_nominal)
    return rows


def worst_case_grid(models: Mapping[str, object], operator, images: torch.Tensor, *, angle_deg: float = 0.25,
                    shift: float = 0.5, gain: float = 0.01, views: int = 2, seed: int = 0, noise=None,
                    batch_size: int = 8) -> tuple[list[dict], list[dict]]:
    """The worst case over the product grid ``angle in {-a, 0, a} x shift in {-s, 0, s} x gain in {0, g} x
    views in {0, k}`` (36 scanners).

    Returns ``(rows, worst)``: per-sample rows of every grid point (``kind = "grid"``), and per model two
    summary rows: ``worst_per_sample`` (each sample's largest relative error over the grid, then the
    mean, and the mean of the ``y_perturbation`` at those points) and ``worst_mean`` (the grid point with
    the largest mean relative error, its parameters and metrics).
    """
    with torch.no_grad():
        y_nominal = operator(images.reshape(images.shape[0], *operator.domain_shape))
    rows = []
    for a, s, g, k in itertools.product((-angle_deg, 0.0, angle_deg), (-shift, 0.0, shift), (0.0, gain),
                                        (0, int(views))):
        params = {"angle_offset_deg": float(a), "detector_shift": float(s), "gain_std": float(g),
                  "missing_views": float(k)}
        op = mismatch_operator(operator, seed=seed, **params).to(images.device)
        rows += _evaluate(models, operator, op, images, {"kind": "grid", "size": float("nan"), **params}, noise,
                          seed, batch_size, y_nominal)
    worst = []
    for label in models:
        mine = [r for r in rows if r["model"] == label]
        n = images.shape[0]
        per_sample = [max((r for r in mine if r["sample"] == i), key=lambda r: r["relative_error"]) for i in range(n)]
        row = {"model": label, "kind": "worst_per_sample", "n": n}
        for k in _METRICS:
            row.update(mean_std(k, [r[k] for r in per_sample]))
        worst.append(row)
        points = {}
        for r in mine:
            points.setdefault(tuple(r[p] for p in _PARAM.values()), []).append(r)
        key, members = max(points.items(), key=lambda kv: np.mean([r["relative_error"] for r in kv[1]]))
        row = {"model": label, "kind": "worst_mean", "n": n, **dict(zip(_PARAM.values(), key))}
        for k in _METRICS:
            row.update(mean_std(k, [r[k] for r in members]))
        worst.append(row)
    return rows, worst


def summarize_mismatch(rows: Sequence[dict]) -> list[dict]:
    """Mean / std per (model, kind, size) of the metrics and of ``y_perturbation``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["kind"], r["size"]), []).append(r)
    out = []
    for (model, kind, size), members in groups.items():
        row = {"model": model, "kind": kind, "size": size, "n": len(members),
               **{p: members[0][p] for p in _PARAM.values()}}
        for k in _METRICS:
            row.update(mean_std(k, [m[k] for m in members]))
        out.append(row)
    return out


def plot_mismatch(summary: Sequence[dict], worst: Sequence[dict], path, *, title: str | None = None):
    """One panel per mismatch kind: relative error against the mismatch size, one line per model (the
    error on ``A`` dotted); the top axis of each panel gives ``||(A' - A) x|| / ||A x||``."""
    from ctrobust.evaluation.report import _pyplot, _save

    plt = _pyplot()
    kinds = [k for k in MISMATCH_KINDS if any(r["kind"] == k for r in summary)]
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4.2 * max(len(kinds), 1), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(dict.fromkeys(r["model"] for r in summary))
    units = {"angle": "angle offset (degrees)", "shift": "detector shift (pixels)", "gain": "gain error std",
             "views": "missing views"}
    for ax, kind in zip(axes[0], kinds):
        for c, label in enumerate(labels):
            color = "black" if label == "FBP" else colors[c % len(colors)]
            pts = sorted((r["size"], r["relative_error_mean"], r["y_perturbation_mean"]) for r in summary
                         if r["model"] == label and r["kind"] == kind)
            base = [r["relative_error_mean"] for r in summary if r["model"] == label and r["kind"] == "none"]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=3, color=color, label=label)
            if base:
                ax.axhline(base[0], color=color, ls=":", lw=1)
            for w in worst:
                if w["model"] == label and w["kind"] == "worst_per_sample":
                    ax.axhline(w["relative_error_mean"], color=color, ls="--", lw=0.8)
        dy = sorted({(r["size"], r["y_perturbation_mean"]) for r in summary if r["kind"] == kind})
        ax.set_xlabel(units[kind])
        ax.set_title("dy = " + ", ".join(f"{v:.2%}" for _, v in dy[:: max(1, len(dy) // 4)]), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("relative error ||f - x|| / ||x||")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title + "; dotted: on A, dashed: worst of the combined grid; dy = ||(A' - A) x|| / ||A x||",
                     fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
