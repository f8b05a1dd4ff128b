"""``ctrobust evaluate``: clean metrics; distribution shift with test-time training; small features.

Three evaluations of the checkpoints and methods of ``--checkpoint`` / ``--method`` (FBP added as a
reference), each a thin layer over the library:

- default: clean metrics (:func:`ctrobust.robustness.clean_metrics`), condition ``clean``;
- ``--shift data|views|noise``: in distribution vs shifted vs shifted + test-time training
  (:mod:`ctrobust.shift`: :func:`~ctrobust.shift.make_shift`, :func:`~ctrobust.shift.distribution_shift`,
  :func:`~ctrobust.shift.gap_closed`); conditions ``in_distribution``, the shift's name (``other_data``,
  ``views_60``, ``noise_0.02``) and ``<name>+ttt``, plus ``shift.csv`` with the SSIM gap and the share
  of it closed by TTT;
- ``--small-features``: disks inserted into the test images (:func:`ctrobust.features.evaluate_features`),
  scored clean and under PGA: ``features.csv`` (per feature) and ``features_summary.csv``.

Every run writes ``samples.csv``, ``summary.csv`` and ``summary.json`` into ``--out`` and prints tables.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from ctrobust.cli.argtypes import eps_list, nonneg_float, nonneg_int, positive_float, positive_int, signature_default
from ctrobust.cli.attack import add_model_arguments, load_inputs, progress_enabled, resolve_device
from ctrobust.errors import CtrobustError

#: columns of the printed table (mean over samples)
TABLE_COLUMNS = ("model", "condition", "n", "mse_mean", "relative_error_mean", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std")
#: columns of the printed distribution-shift table
SHIFT_COLUMNS = ("model", "shifted", "ssim_in_dist", "ssim_shifted", "ssim_ttt", "ssim_gap", "gap_closed",
                 "psnr_in_dist", "psnr_shifted", "psnr_ttt", "ttt_steps_mean")
#: columns of the printed small-features table
FEATURE_COLUMNS = ("model", "eps", "condition", "n_features", "detected", "detected_share", "contrast_ratio_mean",
                   "cnr_mean", "local_error_mean")
#: per-sample metrics of a condition
_METRICS = ("mse", "relative_error", "psnr", "ssim")


def _add_lib_option(group, flag, func, param, *, help, type=None, **kw):
    """An option whose default is the library's (``func``'s parameter ``param``), written into the help.

    The parser default is SUPPRESS, so ``hasattr(args, dest)`` tells whether the user gave it.
    """
    default = signature_default(func, param)
    shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else default
    group.add_argument(flag, type=type, default=argparse.SUPPRESS, help=f"{help} (default: {shown})".replace("%", "%%"), **kw)


def add_parser(subparsers):
    from ctrobust.features import evaluate_features
    from ctrobust.shift import SHIFT_KINDS, make_shift
    from ctrobust.ttt import test_time_train

    p = subparsers.add_parser(
        "evaluate",
        help="clean metrics of checkpoints and methods; distribution shift with test-time training; small features",
        description="Reconstruct y = A x of every sample of a split with each checkpoint / method (and FBP as a "
        "reference) and report MSE, relative error, PSNR (dB, data range 1) and SSIM. With --shift: metrics in "
        "distribution, under the shift, and under the shift after test-time training (--ttt), the SSIM gap and the "
        "share of it closed by TTT. With --small-features: whether inserted small disks are recovered, clean and "
        "under attack. Writes samples.csv, summary.csv and summary.json (plus shift.csv / features.csv, "
        "features_summary.csv) into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_arguments(p)
    p.add_argument("--seed", type=nonneg_int, default=signature_default(make_shift, "seed"),
                   help="seed of the shift's measurement noise, of TTT's held-out bins, of the feature positions and "
                   "of the attack's random starts")

    s = p.add_argument_group(
        "distribution shift", "--shift KIND evaluates each model in distribution (the --data/--split images, the "
        "model's own geometry) and under one shift; a checkpoint is the network trained on the in-distribution data")
    s.add_argument("--shift", choices=SHIFT_KINDS, default=None,
                   help="data: test on other images (--shift-data); views: test on a geometry with --shift-angles views "
                   "(same weights; FBP/TV rebuilt on it); noise: add Gaussian noise of relative level --shift-noise to y")
    s.add_argument("--shift-data", default=argparse.SUPPRESS, metavar="OTHER.h5",
                   help="--shift data: prepared-slice HDF5 file of the other images (same image size as the model), "
                   "or 'phantoms' for the built-in random phantoms (required with --shift data)")
    s.add_argument("--shift-split", default=argparse.SUPPRESS, choices=("train", "val", "test"),
                   help="--shift data: split of --shift-data (default: test)")
    s.add_argument("--shift-angles", type=positive_int, default=argparse.SUPPRESS, metavar="N",
                   help="--shift views: number of views on [0, pi) of the shifted geometry, same image size and "
                   "detectors (e.g. trained at 143, tested at 60; required with --shift views)")
    s.add_argument("--shift-noise", type=positive_float, default=argparse.SUPPRESS, metavar="LEVEL",
                   help="--shift noise: relative Gaussian noise level of the shifted measurements, "
                   "sigma = LEVEL * ||y||_2 / sqrt(size(y)) per sample, i.e. relative to the RMS of y "
                   "(0.02 = 2 %%; required with --shift noise)")
    _add_lib_option(s, "--shift-base-noise", make_shift, "base_noise", type=nonneg_float, metavar="LEVEL",
                    help="relative noise level (same unit as --shift-noise) of every in-distribution measurement, "
                    "and of the shifted ones for data/views shifts")
    s.add_argument("--ttt", action="store_true",
                   help="also run test-time training on the shifted measurements: each trained network is fine-tuned "
                   "per sample on ||y - A f(y)||_1 / ||y||_1 with held-out bins for early stopping (methods without "
                   "weights are skipped)")
    _add_lib_option(s, "--ttt-steps", test_time_train, "steps", type=positive_int, metavar="N",
                    help="maximum Adam steps of test-time training per sample")
    _add_lib_option(s, "--ttt-lr", test_time_train, "lr", type=positive_float, metavar="LR",
                    help="Adam learning rate of test-time training")
    _add_lib_option(s, "--ttt-patience", test_time_train, "patience", type=positive_int, metavar="N",
                    help="steps without a new best held-out error before test-time training stops")
    _add_lib_option(s, "--ttt-holdout", test_time_train, "holdout", type=_fraction, metavar="FRACTION",
                    help="fraction of measurement bins held out for self-validation, in (0, 1)")

    f = p.add_argument_group(
        "small features", "--small-features inserts small disks into the test images and reports per model and "
        "feature whether it is recovered (contrast ratio >= threshold), clean and under the PGA attack")
    f.add_argument("--small-features", action="store_true", help="run the small-feature evaluation")
    _add_lib_option(f, "--n-features", evaluate_features, "n_features", type=positive_int, metavar="K",
                    help="disks per image (non-overlapping, inside the body)")
    _add_lib_option(f, "--feature-radius", evaluate_features, "radius", type=positive_float, metavar="PIXELS",
                    help="disk radius in pixels")
    _add_lib_option(f, "--feature-contrast", evaluate_features, "contrast", type=float, metavar="C",
                    help="intensity added inside each disk, in the images' [0, 1] units (negative: a dark feature)")
    _add_lib_option(f, "--eps", evaluate_features, "eps", type=eps_list, metavar="E1,E2,...",
                    help="attack sizes, relative to each sample's ||y||_2 (0.01 = 1 %); 0 (clean) is always evaluated")
    _add_lib_option(f, "--feature-attack-steps", evaluate_features, "attack_steps", type=positive_int, metavar="N",
                    help="PGA steps per eps")
    _add_lib_option(f, "--attack-region", evaluate_features, "attack_region", choices=("image", "features"),
                    help="what the attack maximises: the squared error on the whole image, or only inside the disks "
                    "(an attack trying to erase the features)")
    _add_lib_option(f, "--detection-threshold", evaluate_features, "threshold", type=float, metavar="RATIO",
                    help="a feature counts as recovered when recovered contrast / true contrast >= this")
    p.set_defaults(out="results/evaluate", func=run)
    return p


def _fraction(text: str) -> float:
    v = nonneg_float(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return v


# -- checks before any work -----------------------------------------------------------------------

_SHIFT_ONLY = {"shift_data": ("--shift-data", "data"), "shift_split": ("--shift-split", "data"),
               "shift_angles": ("--shift-angles", "views"), "shift_noise": ("--shift-noise", "noise")}
_TTT_OPTIONS = ("steps", "lr", "patience", "holdout")
_FEATURE_OPTIONS = {"n_features": "n_features", "feature_radius": "radius", "feature_contrast": "contrast",
                    "eps": "eps", "feature_attack_steps": "attack_steps", "attack_region": "attack_region",
                    "detection_threshold": "threshold"}


def check_args(args) -> None:
    """Refuse options that do nothing in this combination, and missing required ones."""
    for dest, (flag, kind) in _SHIFT_ONLY.items():
        if hasattr(args, dest) and args.shift != kind:
            raise CtrobustError(f"{flag} only applies to --shift {kind}" + ("" if args.shift else " (no --shift given)"))
    if args.shift is None and hasattr(args, "shift_base_noise"):
        raise CtrobustError("--shift-base-noise only applies with --shift")
    if args.shift == "data" and not hasattr(args, "shift_data"):
        raise CtrobustError("--shift data needs --shift-data OTHER.h5 (the other images, prepared at the model's "
                            "image size) or --shift-data phantoms")
    if args.shift == "views" and not hasattr(args, "shift_angles"):
        raise CtrobustError("--shift views needs --shift-angles N (the views of the shifted geometry, e.g. 60)")
    if args.shift == "noise":
        if not hasattr(args, "shift_noise"):
            raise CtrobustError("--shift noise needs --shift-noise LEVEL (relative to the RMS of y, e.g. 0.02)")
        if args.shift_noise <= getattr(args, "shift_base_noise", 0.0):
            raise CtrobustError(f"--shift-noise {args.shift_noise} must exceed --shift-base-noise "
                                f"{getattr(args, 'shift_base_noise', 0.0)} to be a shift")
    if args.ttt and args.shift is None:
        raise CtrobustError("--ttt needs --shift (test-time training is evaluated under a distribution shift)")
    given = [f"--ttt-{k}" for k in _TTT_OPTIONS if hasattr(args, f"ttt_{k}")]
    if given and not args.ttt:
        raise CtrobustError(f"{', '.join(given)} only apply with --ttt")
    given = ["--" + k.replace("_", "-") for k in _FEATURE_OPTIONS if hasattr(args, k)]
    if given and not args.small_features:
        raise CtrobustError(f"{', '.join(given)} only apply with --small-features")


def _trainable(f) -> bool:
    from torch import nn

    return isinstance(f, nn.Module) and any(True for _ in f.parameters())


# -- clean ----------------------------------------------------------------------------------------


def conditions(args, recs, dataset) -> list[tuple[str, object]]:
    """``(name, dataset)`` pairs of the plain evaluation; ``"clean"`` is the split itself."""
    return [("clean", dataset)]


def evaluate(args, recs, dataset) -> tuple[list[dict], list[dict]]:
    """Per-sample rows and summary rows for every reconstruction and condition (no shift)."""
    from ctrobust.robustness import clean_metrics

    device = resolve_device(args.device)
    sample_rows, summary_rows = [], []
    for condition, data in conditions(args, recs, dataset):
        for rec in recs:
            rows, summary = clean_metrics(rec.f, data, rec.operator, batch_size=args.batch_size,
                                          max_samples=args.n_samples, progress=progress_enabled(args), device=device)
            sample_rows += [{"model": rec.label, "condition": condition, **r} for r in rows]
            summary_rows.append({"model": rec.label, "condition": condition, **summary})
    return sample_rows, summary_rows


# -- distribution shift ---------------------------------------------------------------------------


def shift_config(args) -> dict:
    from ctrobust.shift import make_shift

    cfg = {"kind": args.shift, "seed": args.seed,
           "base_noise": getattr(args, "shift_base_noise", signature_default(make_shift, "base_noise"))}
    if args.shift == "data":
        cfg.update(shift_data=args.shift_data, shift_split=getattr(args, "shift_split", "test"))
    elif args.shift == "views":
        cfg["n_angles"] = args.shift_angles
    elif args.shift == "noise":
        cfg["noise"] = args.shift_noise
    cfg["ttt"] = bool(args.ttt)
    if args.ttt:
        cfg["ttt_options"] = ttt_options(args, progress=False)
    return cfg


def ttt_options(args, *, progress: bool) -> dict:
    """Keyword arguments of :func:`ctrobust.ttt.test_time_train`: library defaults unless given."""
    from ctrobust.ttt import test_time_train

    opts = {k: getattr(args, f"ttt_{k}", signature_default(test_time_train, k)) for k in _TTT_OPTIONS}
    opts.update(seed=args.seed, progress=progress)
    return opts


def prepare_shift(args, recs, dataset) -> list[tuple]:
    """``(rec, in_dist, shifted, f_shifted)`` per reconstruction; every input error surfaces here."""
    import torch

    from ctrobust.data import load_split
    from ctrobust.methods import build_method, move_to
    from ctrobust.shift import make_shift, stack_images

    device = resolve_device(args.device)
    if args.ttt and not any(_trainable(r.f) for r in recs):
        raise CtrobustError("--ttt fine-tunes trained networks: pass a --checkpoint (methods such as FBP or TV have no "
                            "weights to train)")
    images = stack_images(dataset, args.n_samples).to(device)
    cfg = shift_config(args)
    shifted_images = None
    if args.shift == "data":
        other = None if cfg["shift_data"] == "phantoms" else cfg["shift_data"]
        if other is not None and not os.path.isfile(other):
            raise CtrobustError(f"cannot open --shift-data {other}: no such file; pass a prepared-slice HDF5 file "
                                "(ctrobust prepare-dicom / make-phantoms) or 'phantoms' for the built-in phantoms")
        try:
            other_set = load_split(other, cfg["shift_split"], size=images.shape[-1])
        except (CtrobustError, OSError, KeyError, ValueError) as exc:
            raise CtrobustError(f"cannot open --shift-data {cfg['shift_data']} ({cfg['shift_split']} split): {exc}") from None
        shifted_images = stack_images(other_set, args.n_samples).to(device)
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
            in_dist, shifted, g = make_shift(args.shift, rec.f, images, shifted_images=shifted_images,
                                             n_angles=cfg.get("n_angles"), noise=cfg.get("noise", 0.0),
                                             base_noise=cfg["base_noise"], seed=args.seed, rebuild=rebuild)
        except ValueError as exc:
            raise CtrobustError(f"--shift {args.shift} for {rec.label}: {exc}") from None
        except AttributeError as exc:  # e.g. a views shift of a non-CT operator
            raise CtrobustError(f"--shift {args.shift} does not apply to {rec.label}: {exc}") from None
        plans.append((rec, in_dist, shifted, g))
    return plans


def _condition_rows(label, condition, metrics) -> tuple[list[dict], dict]:
    import numpy as np

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
            arr = np.asarray(metrics[k], dtype=np.float64)
            summary[f"{k}_mean"], summary[f"{k}_std"] = float(arr.mean()), float(arr.std())
    return rows, summary


def evaluate_shift(args, plans) -> tuple[list[dict], list[dict], list[dict]]:
    """``(sample rows, summary rows, shift rows)``: three conditions per model and one gap row per model."""
    from ctrobust.shift import distribution_shift

    progress = progress_enabled(args)
    sample_rows, summary_rows, shift_rows = [], [], []
    for rec, in_dist, shifted, g in plans:
        do_ttt = bool(args.ttt and _trainable(rec.f))
        print(f"evaluating {rec.label}: {in_dist.name} vs {shifted.name}{' (+ TTT)' if do_ttt else ''}", file=sys.stderr)
        res = distribution_shift(rec.f, in_dist, shifted, f_shifted=g, ttt=do_ttt,
                                 ttt_options=ttt_options(args, progress=progress) if do_ttt else None,
                                 batch_size=args.batch_size, progress=progress)
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
            row["ttt_skipped"] = "no --ttt" if not args.ttt else "no weights to train"
        shift_rows.append(row)
    return sample_rows, summary_rows, shift_rows


# -- small features -------------------------------------------------------------------------------


def feature_settings(args) -> dict:
    """Keyword arguments of :func:`ctrobust.features.evaluate_features`: library defaults unless given."""
    from ctrobust.features import evaluate_features

    kw = {lib: getattr(args, dest, signature_default(evaluate_features, lib)) for dest, lib in _FEATURE_OPTIONS.items()}
    kw["eps"] = [0.0] + sorted({float(e) for e in kw["eps"] if e > 0})
    kw["seed"] = args.seed
    return kw


def prepare_features(args, recs, dataset):
    """The test images, after checking the features fit into them (so errors come before any output)."""
    from ctrobust.features import insert_disks
    from ctrobust.shift import stack_images

    for rec in recs:
        if len(tuple(rec.operator.domain_shape)) != 3:
            raise CtrobustError(f"--small-features needs CT images (B, 1, N, N); {rec.label}'s operator has domain "
                                f"{tuple(rec.operator.domain_shape)}")
    images = stack_images(dataset, args.n_samples).to(resolve_device(args.device))
    kw = feature_settings(args)
    try:
        insert_disks(images, n_features=kw["n_features"], radius=kw["radius"], contrast=kw["contrast"], seed=kw["seed"])
    except ValueError as exc:
        raise CtrobustError(f"--small-features: {exc}") from None
    return images


def evaluate_small_features(args, recs, images) -> tuple[list[dict], list[dict]]:
    """``(per-feature rows, summary rows per model and eps)``; the same disks for every model (same seed)."""
    import numpy as np

    from ctrobust.features import evaluate_features

    kw = feature_settings(args)
    progress = progress_enabled(args)
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
                arr = np.asarray([r[k] for r in sel], dtype=np.float64)
                row[f"{k}_mean"], row[f"{k}_std"] = float(np.nanmean(arr)), float(np.nanstd(arr))
            summary.append(row)
    return rows, summary


# -- run ------------------------------------------------------------------------------------------


def run(args) -> int:
    from ctrobust import __version__
    from ctrobust import report as rp

    check_args(args)
    rp.prepare_output_dir(args.out, args.force, create=False)
    recs, dataset = load_inputs(args)
    plans = prepare_shift(args, recs, dataset) if args.shift else None
    feature_images = prepare_features(args, recs, dataset) if args.small_features else None
    out = rp.prepare_output_dir(args.out, args.force)

    written = ["samples.csv", "summary.csv", "summary.json"]
    result = {"command": "evaluate", "ctrobust_version": __version__}
    if plans is not None:
        sample_rows, summary_rows, shift_rows = evaluate_shift(args, plans)
    else:
        sample_rows, summary_rows = evaluate(args, recs, dataset)
        shift_rows = None
    config = {"data": args.data or "built-in phantoms", "split": args.split,
              "n_samples": summary_rows[0]["n"] if summary_rows else 0,
              "method_options": {r.info["method"]: r.info.get("options", {}) for r in recs if r.kind == "method"}}
    if args.shift:
        config["shift"] = shift_config(args)
    result.update(config=config, models=[{"label": r.label, "source": r.source, "kind": r.kind, "info": r.info} for r in recs],
                  summary=summary_rows)
    if shift_rows is not None:
        result["shift"] = shift_rows
        rp.write_csv(shift_rows, out / "shift.csv")
        written.append("shift.csv")
    if feature_images is not None:
        feature_rows, feature_summary = evaluate_small_features(args, recs, feature_images)
        settings = feature_settings(args)
        result["features"] = {"config": {**settings, "n_images": int(feature_images.shape[0])}, "summary": feature_summary}
        rp.write_csv(feature_rows, out / "features.csv")
        rp.write_csv(feature_summary, out / "features_summary.csv")
        written += ["features.csv", "features_summary.csv"]
    rp.write_csv(sample_rows, out / "samples.csv")
    rp.write_csv(summary_rows, out / "summary.csv")
    rp.write_json(result, out / rp.SUMMARY_FILE)

    print(rp.format_table(summary_rows, [c for c in TABLE_COLUMNS if any(c in r for r in summary_rows)]))
    if shift_rows is not None:
        print(f"\ndistribution shift ({args.shift}): SSIM gap = in-distribution - shifted; "
              "gap_closed = (SSIM_ttt - SSIM_shifted) / gap")
        print(rp.format_table(shift_rows, [c for c in SHIFT_COLUMNS if any(c in r for r in shift_rows)]))
    if feature_images is not None:
        print(f"\nsmall features: recovered = contrast ratio >= {feature_settings(args)['threshold']}")
        print(rp.format_table(feature_summary, list(FEATURE_COLUMNS)))
    print(f"wrote {out}/: {', '.join(written)}", file=sys.stderr)
    return 0
