"""``ctrobust attack``: worst-case (PGA) robustness curves of trained checkpoints and classical methods.

Checkpoints (``--checkpoint``, or a ``.pt`` path given to ``--method``) and methods (``--method fbp|tv|dip``,
built by :func:`ctrobust.methods.build_method` with the options of ``--tv-*``, ``--dip-*`` and
``--method-option``) are attacked with the same PGA and drawn on one robustness curve, FBP as reference.
Thin layer over :func:`ctrobust.robustness.robustness_curve`; writes ``samples.csv`` (per sample),
``summary.csv`` and ``summary.json`` (mean / std per model, eps and condition),
``robustness_curve.png`` and ``gallery.png`` into ``--out``. ``evaluate`` reuses the argument and
loading helpers defined here.
"""

from __future__ import annotations

import argparse
import sys

from ctrobust.cli.argtypes import (  # noqa: F401  (re-exported for evaluate)
    eps_list,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    signature_default,
)
from ctrobust.errors import CtrobustError



# -- argument types -------------------------------------------------------------------------------




# -- method options -------------------------------------------------------------------------------

#: dedicated flags for the main options of each method: (method, option, type, help). The defaults
#: shown in --help are read from the library signatures (ctrobust.methods.method_options).
METHOD_FLAGS = (
    ("tv", "tau", nonneg_float,
     "TV weight tau in min_x 1/2 ||A x - y||_2^2 + tau TV(x) (x >= 0). Unit: that of the data term "
     "1/2 ||A x - y||^2 (squared sinogram units: a bin is a line integral summing ~N pixels of [0, 1] intensity) "
     "per unit of TV(x) (sum over pixels of the gradient magnitude, [0, 1] intensity, unit pixel spacing); "
     "so it grows with the image size and the number of views (0.3 was best at 64 px, 60 views, 1 %% noise)"),
    ("tv", "iterations", positive_int,
     "Chambolle-Pock iterations; all are unrolled, and PGA differentiates through them (cost per attack step "
     "proportional)"),
    ("dip", "iterations", positive_int,
     "maximum Adam steps of the deep image prior fit, per sample (the attack differentiates through all steps run)"),
    ("dip", "channels", positive_int, "width (channels) of the first level of the un-trained U-Net"),
    ("dip", "depth", nonneg_int, "poolings of the un-trained U-Net"),
    ("dip", "lr", positive_float, "Adam learning rate of the DIP fit"),
    ("dip", "patience", positive_int,
     "early stopping: Adam steps without a new best error on the held-out measurement bins (dip.holdout, a fraction) before the fit stops"),
)


def _flag(method: str, option: str) -> str:
    return f"--{method}-{option.replace('_', '-')}"


def _dest(method: str, option: str) -> str:
    return f"{method}_{option}"


def add_method_option_arguments(p: argparse.ArgumentParser) -> None:
    """--tv-*/--dip-* flags and the generic --method-option NAME.KEY=VALUE (defaults from the library)."""
    from ctrobust.methods import METHODS, method_options

    g = p.add_argument_group("method options", "options of --method tv / dip / fbp, passed to "
                             "ctrobust.methods.build_method(name, operator, **options); the defaults are those of the "
                             "library (TVReconstruction, deep_image_prior, FBPReconstruction)")
    dedicated = set()
    for method, option, typ, text in METHOD_FLAGS:
        default = method_options(method)[option]
        dedicated.add((method, option))
        # default SUPPRESS: the attribute exists only when the flag is given, so a flag for a method that
        # is not selected can be refused; the library default is written into the help instead.
        g.add_argument(_flag(method, option), dest=_dest(method, option), type=typ, default=argparse.SUPPRESS,
                       metavar=option.upper(), help=f"{text} (default: {default})")
    others = []
    for name in sorted(METHODS):
        try:
            known = method_options(name)
        except Exception:  # a registered builder whose module cannot be imported: say nothing about it
            continue
        if known:
            rest = [f"{k}={v}" for k, v in known.items() if (name, k) not in dedicated]
            if rest:
                others.append(f"{name}: {', '.join(rest)}")
    g.add_argument("--method-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="any keyword option of a method, repeatable, typed like its default, e.g. tv.nonneg=false, "
                   "dip.seed=1, dip.holdout=0.1, fbp.filter=hann. Options and library defaults: "
                   + "; ".join(others).replace("%", "%%"))


def method_options_from_args(args, methods) -> dict[str, dict]:
    """``{method: {option: value}}`` from the dedicated flags and --method-option; refuses options of
    methods that are not evaluated (``methods``: the method names, FBP included when it is added)."""
    from ctrobust.methods import parse_method_option

    options: dict[str, dict] = {}
    sources: dict[tuple, str] = {}
    for method, option, _, _ in METHOD_FLAGS:
        if hasattr(args, _dest(method, option)):
            options.setdefault(method, {})[option] = getattr(args, _dest(method, option))
            sources[(method, option)] = _flag(method, option)
    for text in getattr(args, "method_option", []) or []:
        name, key, value = parse_method_option(text)
        if (name, key) in sources and options[name][key] != value:
            raise CtrobustError(f"--method-option {text} contradicts {sources[(name, key)]} {options[name][key]}; give it once")
        options.setdefault(name, {})[key] = value
        sources[(name, key)] = f"--method-option {name}.{key}"
    for name in options:
        if name not in methods:
            given = ", ".join(v for (m, _), v in sources.items() if m == name)
            raise CtrobustError(f"{given}: option(s) of method {name!r}, which is not evaluated; add --method {name}")
    return options


# -- shared with `evaluate` -----------------------------------------------------------------------


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint/--method, the data and the device: what ``attack`` and ``evaluate`` share."""
    from ctrobust.methods import METHODS
    from ctrobust.robustness import robustness_curve
    from ctrobust.training.trainer import TrainConfig

    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                   help="checkpoint written by 'ctrobust train' (e.g. runs/NAME/best.pt); repeat to compare several")
    p.add_argument("--method", action="append", default=[], metavar="NAME",
                   help=f"a reconstruction method to evaluate as a model, repeatable; one of: {', '.join(sorted(METHODS))} "
                   "(options below); a checkpoint path (.pt) here is loaded as with --checkpoint")
    p.add_argument("--data", default=None, metavar="DATASET.h5",
                   help="prepared-slice HDF5 file (ctrobust prepare-dicom / make-phantoms); None: built-in random phantoms")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="which split of the data to use")
    p.add_argument("--n-samples", type=positive_int, default=signature_default(robustness_curve, "max_samples"),
                   help="use only the first N samples of the split (None: all)")
    p.add_argument("--batch-size", type=positive_int, default=signature_default(robustness_curve, "batch_size"),
                   help="samples per batch")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help=f"image side N in pixels of the phantoms and of the geometry, only when no checkpoint gives one "
                   f"(None: the data's size, {TrainConfig.DEFAULT_SIZE} for phantoms)")
    p.add_argument("--n-angles", type=positive_int, default=TrainConfig.angles,
                   help="views on [0, pi) of the parallel-beam geometry, only when no checkpoint gives one")
    p.add_argument("--device", default="auto", help="torch device: 'cpu', 'cuda', 'cuda:1', or 'auto' (CUDA when available)")
    p.add_argument("--no-fbp", action="store_true", help="do not add FBP as a reference (it is added for CT operators)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (refused if not empty, unless --force)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder, overwriting its files")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars (they are off anyway when not a terminal)")
    add_method_option_arguments(p)


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CtrobustError(f"unknown --device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CtrobustError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return device


def load_inputs(args):
    """``(reconstructions, dataset)`` for ``args`` (checkpoints, methods, FBP reference, data split)."""
    from ctrobust.data import load_split
    from ctrobust.methods import load_reconstructions, split_methods
    from ctrobust.training.trainer import TrainConfig

    device = resolve_device(args.device)
    paths, methods = split_methods(args.method)
    for path in paths:
        print(f"--method {path}: a checkpoint path, loaded as with --checkpoint {path}", file=sys.stderr)
    checkpoints = list(args.checkpoint) + paths
    dupes = sorted({m for m in methods if methods.count(m) > 1})
    if dupes:
        raise CtrobustError(f"--method {', '.join(dupes)} given twice; give each method once")

    def default_operator():
        from ctrobust.geometry import ParallelBeam2D
        from ctrobust.operators.radon import RadonTransform

        size = args.image_size
        if args.data is not None:
            size = load_split(args.data, args.split).image_size
        size = size or TrainConfig.DEFAULT_SIZE
        return RadonTransform(ParallelBeam2D(int(size), int(args.n_angles)))

    if not checkpoints and not methods:
        raise CtrobustError(
            "nothing to evaluate: pass --checkpoint RUN/best.pt (repeatable) for trained models, "
            "and/or --method fbp for filtered backprojection alone (train a model with 'ctrobust train')"
        )
    add_fbp = not args.no_fbp and "fbp" not in methods
    options = method_options_from_args(args, set(methods) | ({"fbp"} if add_fbp else set()))
    recs = load_reconstructions(checkpoints, methods, device=device, default_operator=default_operator, options=options)
    operator = recs[0].operator
    if add_fbp and hasattr(operator, "fbp"):
        recs += load_reconstructions((), ["fbp"], device=device, default_operator=lambda: operator, options=options)
    shape = _image_shape(operator)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise CtrobustError(f"the operator's images are {shape}; attack and evaluate need square images")
    if args.image_size is not None and checkpoints and args.image_size != shape[0]:
        raise CtrobustError(f"--image-size {args.image_size} disagrees with the checkpoint's {shape[0]} px; drop --image-size")
    try:
        dataset = load_split(args.data, args.split, size=shape[0])
    except FileNotFoundError as exc:
        raise CtrobustError(f"cannot open --data {args.data}: {exc}") from None
    if getattr(dataset, "image_size", shape[0]) != shape[0]:
        raise CtrobustError(f"--data has {dataset.image_size} px images but the model expects {shape[0]} px; "
                            "use data prepared at the model's size")
    for r in recs[1:]:
        if _image_shape(r.operator) != shape:
            raise CtrobustError(f"{r.label} reconstructs {_image_shape(r.operator)} images, {recs[0].label} {shape}: "
                                "compare models of one image size")
    return recs, dataset


def _image_shape(operator) -> tuple:
    shape = tuple(getattr(operator, "image_shape", ()) or ())
    if not shape:
        dom = tuple(operator.domain_shape)
        shape = dom[1:] if len(dom) == 3 else dom
    return tuple(int(s) for s in shape)


def progress_enabled(args=None) -> bool:
    """Progress bars on a terminal, unless --no-progress."""
    return sys.stderr.isatty() and not getattr(args, "no_progress", False)


# -- attack ---------------------------------------------------------------------------------------


def add_parser(subparsers):
    from ctrobust.attacks import DEFAULT_STEPS
    from ctrobust.robustness import DEFAULT_EPS_GRID, robustness_curve

    p = subparsers.add_parser(
        "attack",
        help="worst-case robustness curves (PGA in sinogram space) of checkpoints, FBP, TV and DIP",
        description="Attack each model (trained checkpoints and methods: fbp, tv, dip) with the same projected "
        "gradient ascent on the measurements over a grid of perturbation sizes and compare with random noise of "
        "the same norm; all appear on one robustness curve with FBP as reference. Writes samples.csv, summary.csv, "
        "summary.json, robustness_curve.png and gallery.png into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_arguments(p)
    p.set_defaults(out="results/attack")
    p.add_argument("--eps", type=nonneg_float, default=None,
                   help="perturbation size shown in the gallery and added to the grid: a fraction of each sample's "
                   "||y||_2 (0.01 = 1 %%), or absolute with --absolute (None: 0.01 without --eps-grid, "
                   "else the grid's largest)")
    p.add_argument("--eps-grid", type=eps_list, default=None, metavar="E1,E2,...",
                   help="comma-separated eps values of the robustness curve, same unit as --eps "
                   f"(None: 0 and --eps; the paper-style grid is {','.join(map(str, DEFAULT_EPS_GRID))})")
    p.add_argument("--attack", choices=("apgd", "pga"), default=signature_default(robustness_curve, "attack"),
                   help="step rule: apgd = adaptive step with momentum and checkpoints (Croce & Hein 2020), reaches the "
                   "worst case (docs/robustness.md); pga = fixed step 2.5 r / steps (Madry et al.), as many papers use: "
                   "it stalls at 80-89 %% of the worst case, so use it only to compare with such papers")
    p.add_argument("--steps", type=nonneg_int, default=signature_default(robustness_curve, "steps"),
                   help=f"gradient steps per restart and eps (each one forward and one backward pass of the model; "
                   f"library default {DEFAULT_STEPS})")
    p.add_argument("--restarts", type=positive_int, default=signature_default(robustness_curve, "restarts"),
                   help="runs per eps: the first starts from the previous eps's worst perturbation (warm start), the "
                   "others at random points; the worst iterate over all is kept")
    p.add_argument("--step-size", type=nonneg_float, default=None,
                   help="apgd: initial step, pga: fixed step, as a fraction of the ball radius (None: 2 for apgd, "
                   "2.5 / steps for pga)")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="start every eps at random points instead of from the previous eps's worst perturbation")
    p.add_argument("--no-linearization", dest="linearization", action="store_false",
                   help="skip the Jacobian norm ||J_f(y)||_2 and the first-order (for FBP: exact) worst case per sample "
                   "(computed by Lanczos for checkpoints and FBP, about 30-300 extra backward passes per batch)")
    p.add_argument("--verify", type=nonneg_int, default=0, metavar="N",
                   help="also attack the first N samples with a much stronger budget (--verify-steps x --verify-restarts) "
                   "and report default / strong per eps (1.0 = the default found the worst case); 0: off")
    p.add_argument("--verify-steps", type=positive_int, default=300, help="steps per restart of the --verify attack")
    p.add_argument("--verify-restarts", type=positive_int, default=5, help="random restarts of the --verify attack")
    p.add_argument("--absolute", action="store_true", help="eps is an absolute l2 radius in sinogram units, not relative to ||y||_2")
    p.add_argument("--target", choices=("truth", "clean"), default=signature_default(robustness_curve, "target"),
                   help="maximise ||f(y + d) - x||^2 (truth) or the deviation ||f(y + d) - f(y)||^2 (clean)")
    p.add_argument("--seed", type=nonneg_int, default=signature_default(robustness_curve, "seed"),
                   help="seed of the random starts and of the random-noise reference (>= 0)")
    p.set_defaults(func=run)
    return p


def eps_settings(args) -> tuple[list[float], float]:
    """``(grid, gallery_eps)`` from --eps / --eps-grid."""
    if args.eps_grid is None:
        eps = 0.01 if args.eps is None else args.eps
        grid = sorted({0.0, eps})
    else:
        grid = sorted(set(args.eps_grid) | ({args.eps} if args.eps is not None else set()))
        eps = args.eps if args.eps is not None else max(grid)
    return grid, eps


def run(args) -> int:
    import torch

    from ctrobust import __version__
    from ctrobust import report as rp
    from ctrobust.robustness import robustness_curve, verify_attack

    if args.step_size == 0:
        raise CtrobustError("--step-size must be > 0 (or leave it out for 2.5 / steps)")
    grid, gallery_eps = eps_settings(args)
    rp.prepare_output_dir(args.out, args.force, create=False)
    recs, dataset = load_inputs(args)
    device = resolve_device(args.device)
    out = rp.prepare_output_dir(args.out, args.force)
    progress = progress_enabled(args)
    sample_rows, summary_rows, summaries, gallery = [], [], {}, []
    verify_rows = []
    for rec in recs:
        print(f"attacking {rec.label} ({rec.source}) on {min(len(dataset), args.n_samples or len(dataset))} samples, "
              f"eps grid {grid}, {args.attack.upper()} {args.steps} steps x {args.restarts}", file=sys.stderr)
        linearization = args.linearization and not (rec.kind == "method" and rec.info.get("method") in ("tv", "dip"))
        try:
            result = robustness_curve(rec.f, dataset, rec.operator, grid, steps=args.steps, restarts=args.restarts,
                                      batch_size=args.batch_size, relative=not args.absolute, target=args.target,
                                      seed=args.seed, progress=progress, max_samples=args.n_samples,
                                      step_size=args.step_size, n_examples=1, device=device, attack=args.attack,
                                      warm_start=args.warm_start, linearization=linearization)
        except (ValueError, FloatingPointError) as exc:
            raise CtrobustError(f"attacking {rec.label}: {exc}") from None
        _report_convergence(rec.label, result, args)
        if args.verify:
            rows = verify_attack(rec.f, dataset, rec.operator, result, args.verify, steps=args.verify_steps,
                                 restarts=args.verify_restarts, seed=args.seed + 1, progress=progress, device=device)
            verify_rows += [{"model": rec.label, **r} for r in rows]
        sample_rows += [{"model": rec.label, **r} for r in result.rows]
        summary_rows += [{"model": rec.label, **r} for r in result.summary]
        summaries[rec.label] = result.summary
        ex = result.examples
        y = ex["y"][:1]
        fbp = None
        if hasattr(rec.operator, "fbp"):
            with torch.no_grad():
                fbp = rec.operator.fbp(y.to(device)).cpu()[0, 0].numpy()
        at = ex[gallery_eps]
        delta = at["delta"][0]
        gallery.append({"label": rec.label, "truth": ex["x"][0, 0].numpy(), "fbp": fbp,
                        "clean": ex["clean"][0, 0].numpy(), "attack": at["attack"][0, 0].numpy(),
                        "delta": (delta[0] if delta.dim() == 3 else delta).numpy()})
    config = {"eps_grid": grid, "gallery_eps": gallery_eps, "relative": not args.absolute, "target": args.target,
              "attack": args.attack, "steps": args.steps, "restarts": args.restarts, "step_size": args.step_size,
              "warm_start": args.warm_start, "linearization": args.linearization, "seed": args.seed,
              "data": args.data or "built-in phantoms", "split": args.split, "n_samples": result.config["n_samples"],
              "method_options": {r.info["method"]: r.info.get("options", {}) for r in recs if r.kind == "method"}}
    models = [{"label": r.label, "source": r.source, "kind": r.kind, "info": r.info} for r in recs]
    rp.write_csv(sample_rows, out / "samples.csv")
    rp.write_csv(summary_rows, out / "summary.csv")
    payload = {"command": "attack", "ctrobust_version": __version__, "config": config, "models": models,
               "summary": summary_rows}
    if verify_rows:
        payload["verification"] = verify_rows
        rp.write_csv(verify_rows, out / "verify.csv")
    rp.write_json(payload, out / rp.SUMMARY_FILE)
    rp.plot_robustness_curves(summaries, out / "robustness_curve.png", relative=not args.absolute,
                              title=f"{args.attack.upper()} ({args.steps} steps, {args.restarts} restart(s)) vs random noise, "
                              f"target: {args.target}")
    rp.plot_gallery(gallery, out / "gallery.png", title=f"sample 0, eps = {gallery_eps:g}{'' if args.absolute else ' (relative)'}")
    rows, cols = rp.attack_table(summary_rows)
    print(rp.format_table(rows, cols))
    if verify_rows:
        print(f"\nverification on {verify_rows[0]['n']} samples: squared error of the default attack / of "
              f"{args.verify_steps} steps x {args.verify_restarts} restarts (1.0 = converged)")
        print(rp.format_table([{k: r[k] for k in ("model", "eps", "ratio_mean", "ratio_min", "relative_error_default",
                                                   "relative_error_strong")} for r in verify_rows],
                              ["model", "eps", "ratio_mean", "ratio_min", "relative_error_default", "relative_error_strong"]))
    written = "samples.csv, summary.csv, summary.json, robustness_curve.png, gallery.png" + (", verify.csv" if verify_rows else "")
    print(f"wrote {out}/: {written}", file=sys.stderr)
    return 0


def _report_convergence(label: str, result, args) -> None:
    """Say how many samples had not converged (best loss still rising > 0.5 % over the last fifth)."""
    bad = {}
    for r in result.rows:
        if r["condition"] == "attack" and r.get("converged") == 0.0:
            bad[r["eps"]] = bad.get(r["eps"], 0) + 1
    if bad:
        n = result.config["n_samples"]
        where = ", ".join(f"{c}/{n} at eps {e:g}" for e, c in sorted(bad.items()))
        print(f"{label}: the attack had not converged on {where} (its best loss still rose by more than 0.5 % over "
              f"the last fifth of the steps); the worst case may be larger: try --steps {2 * max(args.steps, 1)} or "
              "--verify 4", file=sys.stderr)

