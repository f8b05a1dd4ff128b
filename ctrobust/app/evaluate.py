"""``run_evaluate``: clean metrics; distribution shift with test-time training; small features (``ctrobust evaluate``).

Three evaluations of the checkpoints and methods of an :class:`~ctrobust.app.specs.EvaluateSpec` (FBP added
as a reference), each a layer over the library:

- default: clean metrics (:func:`ctrobust.evaluation.robustness.clean_metrics`), condition ``clean``;
- ``shift="data"|"views"|"noise"``: in distribution vs shifted vs shifted + test-time training
  (:mod:`ctrobust.evaluation.shift`); conditions ``in_distribution``, the shift's name (``other_data``, ``views_60``,
  ``noise_0.02``) and ``<name>+ttt``, plus ``shift.csv`` with the SSIM gap and the share of it closed by TTT;
- ``small_features``: disks inserted into the test images (:func:`ctrobust.evaluation.features.evaluate_features`),
  scored clean and under PGA: ``features.csv`` (per feature) and ``features_summary.csv``.

Every run writes ``samples.csv``, ``summary.csv`` and ``summary.json`` into ``spec.out``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

from ctrobust.app.inputs import (acquisition_config, load_inputs, method_options_record, models_record, noise_model,
                                 progress_enabled)
from ctrobust.app.results import ResultFolder
from ctrobust.app.specs import FEATURE_OPTIONS, MISMATCH_OPTIONS, EvaluateSpec, signature_default
from ctrobust.errors import CtrobustError
from ctrobust.files import resolve_device
from ctrobust.evaluation.metrics import mean_std

__all__ = ["run_evaluate", "EvaluateResult"]

#: columns of the printed table (mean over samples)
TABLE_COLUMNS = ("model", "condition", "n", "mse_mean", "relative_error_mean", "psnr_mean", "psnr_std", "ssim_mean",
                 "ssim_std")
#: columns of the printed distribution-shift table
SHIFT_COLUMNS = ("model", "shifted", "ssim_in_dist", "ssim_shifted", "ssim_ttt", "ssim_gap", "gap_closed",
                 "psnr_in_dist", "psnr_shifted", "psnr_ttt", "ttt_steps_mean")
#: columns of the printed small-features table
FEATURE_COLUMNS = ("model", "eps", "condition", "n_features", "detected", "detected_share", "contrast_ratio_mean",
                   "cnr_mean", "local_error_mean")
#: per-sample metrics of a condition
_METRICS = ("mse", "relative_error", "psnr", "ssim")
_TTT_OPTIONS = ("steps", "lr", "patience", "holdout")


@dataclasses.dataclass
class EvaluateResult:
    """What :func:`run_evaluate` wrote: the ``summary`` rows, the ``shift`` rows and the ``features`` summary
    (None when not asked for), the ``config`` record and the files under ``out``."""

    out: Path
    config: dict
    models: list
    summary: list
    shift: list | None
    features: list | None
    written: list
    mismatch: list | None = None
    mismatch_worst: list | None = None

    def text(self) -> str:
        """The tables ``ctrobust evaluate`` prints."""
        from ctrobust.evaluation import report as rp

        parts = [rp.format_table(self.summary, [c for c in TABLE_COLUMNS if any(c in r for r in self.summary)])]
        if self.shift is not None:
            parts.append(f"\ndistribution shift ({self.config['shift']['kind']}): SSIM gap = in-distribution - "
                         "shifted; gap_closed = (SSIM_ttt - SSIM_shifted) / gap")
            parts.append(rp.format_table(self.shift, [c for c in SHIFT_COLUMNS if any(c in r for r in self.shift)]))
        if self.features is not None:
            parts.append(f"\nsmall features: recovered = contrast ratio >= {self.config['features']['threshold']}")
            parts.append(rp.format_table(self.features, list(FEATURE_COLUMNS)))
        if self.mismatch is not None:
            parts.append("\noperator mismatch: y_perturbation = ||(A' - A) x|| / ||A x|| (the unit of the attack's eps); "
                         "sizes in degrees / pixels / gain std / views")
            parts.append(rp.format_table(self.mismatch, list(MISMATCH_COLUMNS)))
            parts.append("\nworst case over the grid (worst_per_sample: each sample's worst scanner; worst_mean: the "
                         "worst single scanner)")
            parts.append(rp.format_table(self.mismatch_worst, [c for c in WORST_COLUMNS
                                                               if any(c in r for r in self.mismatch_worst)]))
        return "\n".join(parts)


def _trainable(f) -> bool:
    from torch import nn

    return isinstance(f, nn.Module) and any(True for _ in f.parameters())


# -- clean ----------------------------------------------------------------------------------------
def evaluate_clean(spec: EvaluateSpec, recs, dataset, device) -> tuple[list[dict], list[dict]]:
    """Per-sample rows and summary rows for every reconstruction (condition ``clean``)."""
    from ctrobust.evaluation.robustness import clean_metrics

    sample_rows, summary_rows = [], []
    for rec in recs:
        rows, summary = clean_metrics(rec.f, dataset, rec.operator, batch_size=spec.batch_size,
                                      max_samples=spec.n_samples, progress=progress_enabled(spec), device=device)
        sample_rows += [{"model": rec.label, "condition": "clean", **r} for r in rows]
        summary_rows.append({"model": rec.label, "condition": "clean", **summary})
        noise = noise_model(spec, rec.operator)
        if noise is not None:  # the same models on the low-dose measurement
            rows, summary = clean_metrics(rec.f, dataset, rec.operator, batch_size=spec.batch_size,
                                          max_samples=spec.n_samples, progress=progress_enabled(spec), device=device,
                                          noise=noise, seed=spec.seed)
            sample_rows += [{"model": rec.label, "condition": "dose", **r} for r in rows]
            summary_rows.append({"model": rec.label, "condition": "dose", **summary})
    return sample_rows, summary_rows


# -- distribution shift ---------------------------------------------------------------------------
def shift_config(spec: EvaluateSpec) -> dict:
    from ctrobust.evaluation.shift import make_shift

    base = spec.shift_base_noise if spec.shift_base_noise is not None else signature_default(make_shift, "base_noise")
    cfg = {"kind": spec.shift, "seed": spec.seed, "base_noise": base}
    if spec.shift == "data":
        cfg.update(shift_data=spec.shift_data, shift_split=spec.shift_split or "test")
    elif spec.shift == "views":
        cfg["n_angles"] = spec.shift_angles
    elif spec.shift == "noise":
        cfg["noise"] = spec.shift_noise
    cfg["ttt"] = bool(spec.ttt)
    if spec.ttt:
        cfg["ttt_options"] = ttt_options(spec, progress=False)
    return cfg


def ttt_options(spec: EvaluateSpec, *, progress: bool) -> dict:
    """Keyword arguments of :func:`ctrobust.reconstruction.ttt.test_time_train`: library defaults unless given."""
    from ctrobust.reconstruction.ttt import test_time_train

    opts = {}
    for k in _TTT_OPTIONS:
        value = getattr(spec, f"ttt_{k}")
        opts[k] = value if value is not None else signature_default(test_time_train, k)
    opts.update(seed=spec.seed, progress=progress)
    return opts


def prepare_shift(spec: EvaluateSpec, recs, dataset, device) -> list[tuple]:
    """``(rec, in_dist, shifted, f_shifted)`` per reconstruction; every input error surfaces here."""
    import torch

    from ctrobust.data import load_split
    from ctrobust.reconstruction.methods import build_method, move_to
    from ctrobust.evaluation.shift import make_shift, stack_images

    if spec.ttt and not any(_trainable(r.f) for r in recs):
        raise CtrobustError("--ttt fine-tunes trained networks: pass a --checkpoint (methods such as FBP or TV have no "
                            "weights to train)")
    images = stack_images(dataset, spec.n_samples).to(device)
    cfg = shift_config(spec)
    shifted_images = None
    if spec.shift == "data":
        other = None if cfg["shift_data"] == "phantoms" else cfg["shift_data"]
        if other is not None and other != "real" and not os.path.isfile(other):
            raise CtrobustError(f"cannot open --shift-data {other}: no such file; pass a prepared-slice HDF5 file "
                                "(ctrobust prepare-dicom / make-phantoms) or 'phantoms' for the built-in phantoms")
        try:
            other_set = load_split(other, cfg["shift_split"], size=images.shape[-1])
        except (CtrobustError, OSError, KeyError, ValueError) as exc:
            raise CtrobustError(f"cannot open --shift-data {cfg['shift_data']} ({cfg['shift_split']} split): {exc}") from None
        shifted_images = stack_images(other_set, spec.n_samples).to(device)
        if shifted_images.shape[0] != images.shape[0]:
            print(f"note: {images.shape[0]} in-distribution and {shifted_images.shape[0]} shifted images",
                  file=sys.stderr)
    plans = []
    for rec in recs:
        rebuild = None
        if rec.kind == "method":
            name, opts = rec.info["method"], dict(rec.info.get("options", {}))

            def rebuild(f, operator, name=name, opts=opts):
                g = build_method(name, operator, **opts)
                return move_to(g, device).eval() if isinstance(g, torch.nn.Module) else g
        try:
            in_dist, shifted, g = make_shift(spec.shift, rec.f, images, shifted_images=shifted_images,
                                             n_angles=cfg.get("n_angles"), noise=cfg.get("noise", 0.0),
                                             base_noise=cfg["base_noise"], seed=spec.seed, rebuild=rebuild)
        except ValueError as exc:
            raise CtrobustError(f"--shift {spec.shift} for {rec.label}: {exc}") from None
        except AttributeError as exc:  # e.g. a views shift of a non-CT operator
            raise CtrobustError(f"--shift {spec.shift} does not apply to {rec.label}: {exc}") from None
        in_dist.noise_model = noise_model(spec, rec.operator)
        shifted.noise_model = noise_model(spec, shifted.operator)
        plans.append((rec, in_dist, shifted, g))
    return plans


def _condition_rows(label, condition, metrics) -> tuple[list[dict], dict]:
    n = len(metrics["ssim"])
    rows = []
    for i in range(n):
        row = {"model": label, "condition": condition, "sample": i}
        row.update({k: float(metrics[k][i]) for k in _METRICS if k in metrics})
        for k in ("ttt_steps", "consistency_before", "consistency_after"):
            if k in metrics and len(metrics[k]) == n:
                row[k] = float(metrics[k][i])
        rows.append(row)
    summary = {"model": label, "condition": condition, "n": n}
    for k in (*_METRICS, "ttt_steps"):
        if k in metrics and len(metrics[k]) == n:
            summary.update(mean_std(k, metrics[k]))
    return rows, summary


def evaluate_shift(spec: EvaluateSpec, plans) -> tuple[list[dict], list[dict], list[dict]]:
    """``(sample rows, summary rows, shift rows)``: three conditions per model and one gap row per model."""
    from ctrobust.evaluation.shift import distribution_shift

    progress = progress_enabled(spec)
    sample_rows, summary_rows, shift_rows = [], [], []
    for rec, in_dist, shifted, g in plans:
        do_ttt = bool(spec.ttt and _trainable(rec.f))
        print(f"evaluating {rec.label}: {in_dist.name} vs {shifted.name}{' (+ TTT)' if do_ttt else ''}", file=sys.stderr)
        res = distribution_shift(rec.f, in_dist, shifted, f_shifted=g, ttt=do_ttt,
                                 ttt_options=ttt_options(spec, progress=progress) if do_ttt else None,
                                 batch_size=spec.batch_size, progress=progress)
        for name, metrics in ((in_dist.name, res.in_dist), (shifted.name, res.shifted),
                              (f"{shifted.name}+ttt", res.ttt)):
            if metrics is None:
                continue
            rows, summary = _condition_rows(rec.label, name, metrics)
            sample_rows += rows
            summary_rows.append(summary)
        row = {"model": rec.label, "kind": rec.kind, **res.summary()}
        if do_ttt:
            row["ttt_steps_mean"] = float(sum(res.ttt["ttt_steps"]) / len(res.ttt["ttt_steps"]))
        else:
            row["ttt_skipped"] = "no --ttt" if not spec.ttt else "no weights to train"
        shift_rows.append(row)
    return sample_rows, summary_rows, shift_rows


# -- small features -------------------------------------------------------------------------------
def feature_settings(spec: EvaluateSpec) -> dict:
    """Keyword arguments of :func:`ctrobust.evaluation.features.evaluate_features`: library defaults unless given
    (``settings``: the library's attack settings with ``--feature-attack-steps`` and the attack seeded ``--seed``)."""
    from ctrobust.evaluation.features import evaluate_features

    kw = {}
    for name, lib in FEATURE_OPTIONS.items():
        value = getattr(spec, name)
        if lib == "settings.steps":  # the attack: the library's settings with --feature-attack-steps and --seed
            settings = signature_default(evaluate_features, "settings")
            kw["settings"] = settings.replace(steps=settings.steps if value is None else value, seed=spec.seed)
            continue
        kw[lib] = value if value is not None else signature_default(evaluate_features, lib)
    kw["eps"] = [0.0] + sorted({float(e) for e in kw["eps"] if e > 0})
    kw["seed"] = spec.seed
    return kw


def feature_record(spec: EvaluateSpec) -> dict:
    """:func:`feature_settings` as a JSON-able record: the attack as ``attack`` (its settings' record)."""
    kw = feature_settings(spec)
    settings = kw.pop("settings")
    return {**kw, "attack": settings.to_config()}


def prepare_features(spec: EvaluateSpec, recs, dataset, device):
    """The test images, after checking the features fit into them (so errors come before any output)."""
    from ctrobust.evaluation.features import insert_disks
    from ctrobust.evaluation.shift import stack_images

    for rec in recs:
        if len(tuple(rec.operator.domain_shape)) != 3:
            raise CtrobustError(f"--small-features needs CT images (B, 1, N, N); {rec.label}'s operator has domain "
                                f"{tuple(rec.operator.domain_shape)}")
    images = stack_images(dataset, spec.n_samples).to(device)
    kw = feature_settings(spec)
    try:
        insert_disks(images, n_features=kw["n_features"], radius=kw["radius"], contrast=kw["contrast"], seed=kw["seed"])
    except ValueError as exc:
        raise CtrobustError(f"--small-features: {exc}") from None
    return images


def evaluate_small_features(spec: EvaluateSpec, recs, images) -> tuple[list[dict], list[dict]]:
    """``(per-feature rows, summary rows per model and eps)``; the same disks for every model (same seed)."""
    from ctrobust.evaluation.features import evaluate_features

    kw = feature_settings(spec)
    progress = progress_enabled(spec)
    rows = []
    for rec in recs:
        print(f"small features: {rec.label}, eps {kw['eps']}", file=sys.stderr)
        for r in evaluate_features({rec.label: rec.f}, rec.operator, images, progress=progress, **kw):
            model = r.pop("method")
            rows.append({"model": model, "condition": "clean" if r["eps"] == 0 else "attack", **r})
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for eps in kw["eps"]:
            sel = [r for r in rows if r["model"] == model and r["eps"] == eps]
            detected = sum(bool(r["detected"]) for r in sel)
            row = {"model": model, "eps": eps, "condition": "clean" if eps == 0 else "attack",
                   "n_features": len(sel), "detected": f"{detected}/{len(sel)}", "n_detected": detected,
                   "detected_share": detected / len(sel) if sel else math.nan}
            for k in ("contrast_ratio", "recovered_contrast", "cnr", "local_error"):
                row.update(mean_std(k, [r[k] for r in sel], ignore_nan=True))
            summary.append(row)
    return rows, summary


# -- operator mismatch ---------------------------------------------------------------------------
#: columns of the printed mismatch tables
MISMATCH_COLUMNS = ("model", "kind", "size", "y_perturbation_mean", "relative_error_mean", "psnr_mean", "ssim_mean")
WORST_COLUMNS = ("model", "kind", "angle_offset_deg", "detector_shift", "gain_std", "missing_views",
                 "y_perturbation_mean", "relative_error_mean", "psnr_mean", "ssim_mean")


def mismatch_grid(spec: EvaluateSpec) -> dict:
    """``{kind: sizes}``: the library's defaults unless given."""
    from ctrobust.evaluation.mismatch_sweep import DEFAULT_MISMATCH_GRID

    grid = {}
    for name, kind in MISMATCH_OPTIONS.items():
        value = getattr(spec, name)
        grid[kind] = tuple(float(v) for v in (value if value is not None else DEFAULT_MISMATCH_GRID[kind]))
    return grid


def prepare_mismatch(spec: EvaluateSpec, recs, dataset, device):
    """The test images, after checking every model's operator is a CT scanner that can be perturbed."""
    from ctrobust.evaluation.shift import stack_images

    for rec in recs:
        if not hasattr(getattr(rec.operator, "geometry", None), "n_detectors"):
            raise CtrobustError(f"--mismatch perturbs a CT scanner; {rec.label}'s operator "
                                f"{type(rec.operator).__name__} has no CT geometry")
    return stack_images(dataset, spec.n_samples).to(device)


def evaluate_mismatch(spec: EvaluateSpec, recs, images):
    """``(per-sample rows, summary per model/kind/size, worst-case rows)``."""
    from ctrobust.evaluation.mismatch_sweep import mismatch_sweep, summarize_mismatch, worst_case_grid

    grid = mismatch_grid(spec)
    rows, worst = [], []
    for rec in recs:
        print(f"operator mismatch: {rec.label}, {sum(len(v) for v in grid.values())} single mismatches and a "
              "36-point worst-case grid", file=sys.stderr)
        noise = noise_model(spec, rec.operator)
        models = {rec.label: rec.f}
        rows += mismatch_sweep(models, rec.operator, images, grid=grid, seed=spec.seed, noise=noise,
                               batch_size=spec.batch_size)
        mid = {k: sorted(v)[len(v) // 2] if v else 0.0 for k, v in grid.items()}
        grid_rows, w = worst_case_grid(models, rec.operator, images, angle_deg=mid["angle"], shift=mid["shift"],
                                       gain=mid["gain"], views=int(mid["views"]), seed=spec.seed, noise=noise,
                                       batch_size=spec.batch_size)
        rows += grid_rows
        worst += w
    summary = summarize_mismatch([r for r in rows if r["kind"] != "grid"])
    return rows, summary, worst


# -- run ------------------------------------------------------------------------------------------
def run_evaluate(spec: EvaluateSpec) -> EvaluateResult:
    """Evaluate every model of ``spec``; every input is checked before ``spec.out`` is created."""
    folder = ResultFolder(spec.out, spec.force).check()
    device = resolve_device(spec.device)
    recs, dataset = load_inputs(spec, device)
    plans = prepare_shift(spec, recs, dataset, device) if spec.shift else None
    feature_images = prepare_features(spec, recs, dataset, device) if spec.small_features else None
    mismatch_images = prepare_mismatch(spec, recs, dataset, device) if spec.mismatch else None
    folder.create()

    if plans is not None:
        sample_rows, summary_rows, shift_rows = evaluate_shift(spec, plans)
    else:
        sample_rows, summary_rows = evaluate_clean(spec, recs, dataset, device)
        shift_rows = None
    config = {"data": spec.data or "built-in phantoms", "split": spec.split, "photons": spec.photons,
              "n_samples": summary_rows[0]["n"] if summary_rows else 0,
              "method_options": method_options_record(recs)}
    if spec.shift:
        config["shift"] = shift_config(spec)
    tables = {}
    feature_summary = None
    if shift_rows is not None:
        tables["shift"] = shift_rows
        folder.write_csv("shift.csv", shift_rows)
    if feature_images is not None:
        feature_rows, feature_summary = evaluate_small_features(spec, recs, feature_images)
        tables["features"] = {"config": {**feature_record(spec), "n_images": int(feature_images.shape[0])},
                              "summary": feature_summary}
        folder.write_csv("features.csv", feature_rows)
        folder.write_csv("features_summary.csv", feature_summary)
    mismatch_summary = mismatch_worst = None
    if mismatch_images is not None:
        from ctrobust.evaluation.mismatch_sweep import plot_mismatch

        mismatch_rows, mismatch_summary, mismatch_worst = evaluate_mismatch(spec, recs, mismatch_images)
        config["mismatch"] = {"grid": mismatch_grid(spec), "seed": spec.seed,
                              "n_images": int(mismatch_images.shape[0])}
        tables["mismatch"] = {"summary": mismatch_summary, "worst": mismatch_worst}
        folder.write_csv("mismatch.csv", mismatch_rows)
        folder.write_csv("mismatch_summary.csv", mismatch_summary)
        folder.write_csv("mismatch_worst.csv", mismatch_worst)
        plot_mismatch(mismatch_summary, mismatch_worst, folder.figure("mismatch.png"),
                      title="reconstruction error under scanner mismatch (models built for the nominal A)")
    folder.write_csv("samples.csv", sample_rows)
    folder.write_csv("summary.csv", summary_rows)
    config.update(acquisition_config(spec, recs))  # what was measured: geometry, backend, noise
    models = models_record(recs, spec)
    folder.write_summary("evaluate", config, models, summary_rows, **tables)
    text_config = dict(config)
    if feature_images is not None:
        text_config["features"] = feature_record(spec)
    return EvaluateResult(out=folder.path, config=text_config, models=models, summary=summary_rows,
                          shift=shift_rows, features=feature_summary, written=list(folder.written),
                          mismatch=mismatch_summary, mismatch_worst=mismatch_worst)
