"""The specs of the commands: every option of ``ctrobust train``, ``attack``, ``evaluate``, ``prepare-dicom``,
``make-phantoms``, ``demo`` and ``report``, with its help, unit, choices and its one default.

The command line is generated from these classes (:mod:`ctrobust.cli.adapter`); Python callers build them
directly, e.g. ``run_train(TrainSpec(angles=60, size=64, max_steps=100, out="runs/a"))``. One name per
concept across commands: ``size`` (image side in pixels), ``angles`` (views on [0, pi)), ``eps`` (one
radius), ``eps_grid`` (several radii), ``absolute`` (radii in sinogram units instead of relative to
``||y||_2``), ``n_samples``, ``seed``, ``device``, ``out``, ``force``, ``progress``.
"""

from __future__ import annotations

import argparse
import dataclasses

from ctrobust.app.acquisition import GEOMETRY_KINDS
from ctrobust.app.spec import (Library, Spec, device_name, eps_list, fraction, image_size, nonneg_float, nonneg_int,
                               option, positive_float, positive_int, signature_default)
from ctrobust.errors import CtrobustError

# The library's defaults and choices are named here and read when first needed (Library, signature_default with
# a "module:callable" path): building the parser imports no torch (tests/test_layers.py).
_ROBUSTNESS = "ctrobust.evaluation.robustness:robustness_curve"
_SHIFT = "ctrobust.evaluation.shift:make_shift"
_FIT = "ctrobust.training.trainer:fit"
_FBPCONVNET = "ctrobust.models.fbpconvnet:FBPConvNet"
_OBJ = "ctrobust.training.objectives:"
_SETTINGS = "ctrobust.attacks.settings:AttackSettings"

__all__ = ["OBJECTIVE_FIELDS", "FBPCONVNET_FIELDS", "objective_fields", "model_option_value", "TrainSpec", "AttackSpec", "EvaluateSpec",
           "PrepareDicomSpec", "PrepareVolumesSpec", "MakePhantomsSpec", "DemoSpec",
           "ReportSpec", "BenchmarkSpec", "ModelInputs", "DEFAULT_SIZE", "DEFAULT_ANGLES", "SCHEDULERS", "SPLITS", "METHOD_FLAGS",
           "signature_default", "field_default"]

#: image side in pixels of the built-in phantoms when neither a size nor data is given
DEFAULT_SIZE = 128
#: views on [0, pi) (the paper's geometry)
DEFAULT_ANGLES = 143
SPLITS = ("train", "val", "test")


def __getattr__(name: str):
    if name == "SCHEDULERS":  # re-exported lazily: the trainer imports torch
        from ctrobust.training.trainer import SCHEDULERS

        return SCHEDULERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def field_default(cls, name: str):
    """The default of field ``name`` of dataclass ``cls`` (e.g. :class:`~ctrobust.attacks.AttackSettings`)."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def _lib(func_path: str, name: str):
    """A ``library_default`` callable: the default of parameter ``name`` of ``module:function``."""

    def get():
        import importlib

        module, func = func_path.split(":")
        value = signature_default(getattr(importlib.import_module(module), func), name)
        return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value

    return get


# -- shared options ----------------------------------------------------------------------------------
def _device(group: str | None = None):
    return option("auto", "torch device: auto (CUDA when available), cpu, cuda or cuda:N", parse=device_name,
                  metavar="DEVICE", group=group)


def _progress():
    return option(True, "progress bars (only on a terminal)")


def _allow_large_eps(group: str | None = None):
    """``--allow-large-eps``: accept relative radii above ``MAX_RELATIVE_EPS`` (ctrobust.app.spec.check_radii)."""
    return option(False, "accept a relative eps above 0.5 (50 % of ||y||_2; radii in the literature stop at 0.05-0.1, "
                  "so a larger one is usually a percent typed as a fraction)", group=group)


def _photons(group: str | None = None, extra: str = ""):
    return option(None, "low-dose CT noise: photons I0 per detector bin of the unattenuated beam. Measurements become "
                  "-log(max(N, 1) / I0) / mu with N ~ Poisson(I0 exp(-mu A x)), mu = 21.153 / N per pixel (LoDoPaB's "
                  "attenuation scale, docs/conventions.md); LoDoPaB's low dose is 4096" + extra, unit="photons",
                  parse=positive_float, metavar="I0", group=group, default_text="noise-free y = A x")


def _geometry_options(group: str | None = None, extra: str = "") -> dict:
    """``geometry`` and the fan-beam lengths (pixels), as field defaults: ``--geometry parallel|fan`` and its options."""
    def length(what, default_text):
        return option(None, f"--geometry fan: {what}{extra}", unit="pixels", parse=positive_float, metavar="PIXELS",
                      group=group, default_text=default_text)

    return {
        "geometry": option(GEOMETRY_KINDS[0], "acquisition geometry: parallel beam (views on [0, pi)) or fan beam (a "
                           "point source and a flat detector, ASTRA fanflat, views on [0, 2 pi), weighted FBP; "
                           "docs/conventions.md)" + extra, choices=GEOMETRY_KINDS, group=group),
        "source_origin": length("distance from the source to the rotation axis", "2 sqrt(2) N, twice the image diagonal"),
        "origin_detector": length("distance from the rotation axis to the detector", "half the source distance"),
        "detector_spacing": length("width of a detector bin, measured on the detector",
                                   "the magnification (source + detector distance) / source distance: 1 pixel at "
                                   "the axis"),
    }


_GD = _geometry_options("geometry and data")
_GM = _geometry_options(None, "; only when no checkpoint gives one")


def _protocol(group: str | None = None):
    """``--protocol NAME``: a named protocol's geometry and noise at ``--size`` (ctrobust benchmark --list)."""
    return option(None, "a named protocol (ctrobust benchmark --list, docs/protocols.md): its scan at --size and its "
                  "measurement noise replace --angles, --geometry, the fan lengths and --photons",
                  metavar="NAME", group=group, default_text="none")


def _force(what: str = "a non-empty --out, overwriting its files"):
    return option(False, f"write into {what}")


# ======================================================================================================
def _model_name(text: str) -> str:
    """``--model``: a registered model name or an import path ``package.module:factory`` (checked for form only:
    the factory is imported when the model is built)."""
    import argparse

    from ctrobust.models.registry import is_import_path, model_names

    name = str(text).strip()
    if name in model_names() or is_import_path(name):
        return name
    raise argparse.ArgumentTypeError(f"expected a model name ({', '.join(model_names())}) or the import path "
                                     f"'package.module:factory' of a function factory(operator, **options), got {text!r}")


def _model_option(text: str) -> str:
    """``--model-option KEY=VALUE``: VALUE is read as JSON (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``), else
    taken as text."""
    import argparse

    key, sep, _ = str(text).partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python keyword name, got {text!r}")
    return str(text)


def model_option_value(text: str):
    """``(key, value)`` of a ``--model-option KEY=VALUE`` (VALUE as JSON when it parses, else the text)."""
    import json

    key, _, value = text.partition("=")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


#: FBPConvNet's own TrainSpec fields (``--model fbpconvnet``), the keywords of its constructor
FBPCONVNET_FIELDS = ("channels", "depth", "filter", "norm")
_PERTURBED = ("minmax", "pgd", "universal", "jitter")
#: TrainSpec field -> (the objectives it applies to, the keyword of their classes). Each field's default is
#: read from those classes' signatures (one place for a default: tests/test_spec_defaults.py).
OBJECTIVE_FIELDS = {
    "eps": (_PERTURBED, "eps"),
    "lam": (_PERTURBED, "lam"),
    "absolute": (_PERTURBED, "relative"),  # negated
    "adversary_mode": (("minmax",), "mode"),
    "u_step": (("minmax",), "u_step"),
    "g_lr": (("minmax",), "g_lr"),
    "g_steps": (("minmax",), "g_steps"),
    "pgd_steps": (("pgd",), "steps"),
    "universal_steps": (("universal",), "steps"),
    "mu": (("weight-decay",), "mu"),
    "beta": (("parseval",), "beta"),
}


def objective_fields(objective: str, **fields) -> dict:
    """``fields`` (TrainSpec field values) without the objective options that do not apply to ``objective``.

    For callers that sweep objectives with one set of options: ``TrainSpec(objective=o, **objective_fields(o,
    eps=0.01, pgd_steps=3, lr=1e-3))`` (a TrainSpec refuses an option of another objective).
    """
    return {k: v for k, v in fields.items() if k not in OBJECTIVE_FIELDS or objective in OBJECTIVE_FIELDS[k][0]}


def _objective_default(objective: str, keyword: str):
    """The default of ``keyword`` of the class of objective ``objective`` (read when first needed)."""
    classes = {"minmax": "MinMax", "pgd": "PGD", "universal": "Universal", "jitter": "Jitter",
               "weight-decay": "WeightDecay", "parseval": "Parseval", "plain": "Plain"}
    return signature_default(_OBJ + classes[objective], keyword)


@dataclasses.dataclass(frozen=True)
class TrainSpec(Spec):
    """``ctrobust train``: a network (FBPConvNet by default, any registered or user model with ``--model``) on
    phantoms or a prepared file, with a robustness objective (docs/cli/train.md, docs/models.md)."""

    angles: int = option(DEFAULT_ANGLES, "number of views, uniformly on [0, pi) radians for parallel beam (the paper: "
                         "143), on [0, 2 pi) for fan beam", parse=positive_int, group="geometry and data")
    geometry: str = _GD["geometry"]
    source_origin: float | None = _GD["source_origin"]
    origin_detector: float | None = _GD["origin_detector"]
    detector_spacing: float | None = _GD["detector_spacing"]
    protocol: str | None = _protocol("geometry and data")
    size: int | None = option(None, "image side N", unit="pixels", parse=image_size, group="geometry and data",
                              default_text=f"the data's size, or {DEFAULT_SIZE} for phantoms")
    data: str | None = option(None, "prepared-slice HDF5 file (ctrobust prepare-dicom / make-phantoms): trains on its "
                              "train split, validates on its val split ('real', the pydicom slices, is refused: an "
                              "evaluation set)", metavar="DATASET.h5", group="geometry and data",
                              default_text="built-in random-ellipse phantoms")
    n_train: int | None = option(None, "number of training phantoms without --data", parse=positive_int,
                                 group="geometry and data", default_text="the built-in 256")
    n_val: int | None = option(None, "number of validation phantoms without --data", parse=nonneg_int,
                               group="geometry and data", default_text="the built-in 32")
    data_seed: int = option(signature_default("ctrobust.data:load_split", "seed"),
                            "seed of the built-in phantoms (>= 0)", parse=nonneg_int, group="geometry and data")
    backend: str = option(signature_default("ctrobust.operators.radon:RadonTransform", "backend"),
                          "Radon transform backend", choices=Library("ctrobust.operators.radon:BACKENDS"),
                          group="geometry and data")
    photons: float | None = _photons("geometry and data", ": every step trains on freshly drawn noise, validation "
                                     "uses fixed noise")

    model: str = option("fbpconvnet", "the network: a registered name (fbpconvnet: FBP + residual U-Net, Jin et al.; "
                        "lpd: Learned Primal-Dual; residual) or the import path package.module:factory of your own "
                        "factory(operator, **options) -> torch.nn.Module (docs/models.md); the checkpoint stores the "
                        "factory's import path and options, so attack/evaluate rebuild it by importing that module",
                        parse=_model_name, metavar="NAME|MODULE:FACTORY", group="model")
    model_option: tuple[str, ...] = option((), "an option of the model's factory, repeatable, VALUE read as JSON "
                                           "(e.g. iterations=10, widths=[32,32], name=\"x\"); FBPConvNet's options "
                                           "have their own flags below", parse=_model_option, repeat=True,
                                           metavar="KEY=VALUE", group="model")
    filter: str = option(signature_default(_FBPCONVNET, "filter"), "--model fbpconvnet: FBP filter inside FBPConvNet",
                         choices=Library("ctrobust.operators.filters:FILTERS"), group="model")
    channels: int = option(signature_default(_FBPCONVNET, "channels"), "--model fbpconvnet: U-Net channels of the "
                           "first level (Jin et al.: 64; 8 trains fast on a laptop)", parse=positive_int, group="model")
    depth: int = option(signature_default(_FBPCONVNET, "depth"), "--model fbpconvnet: U-Net poolings (Jin et al.: 4)",
                        parse=nonneg_int, group="model")
    norm: str = option(signature_default(_FBPCONVNET, "norm"), "--model fbpconvnet: U-Net normalisation layers",
                       choices=Library("ctrobust.models.unet:NORMS"), group="model")

    objective: str = option("plain", "training objective (docs/training.md)",
                            choices=Library(_OBJ + "OBJECTIVES", names=True), group="objective")
    eps: float = option(_objective_default("pgd", "eps"), "perturbation radius for minmax/pgd/universal/jitter: a "
                        "fraction of ||y||_2 per sample (0.01 = 1 %), or in sinogram units with --absolute",
                        parse=nonneg_float, group="objective",
                        radius=True)
    absolute: bool = option(False, "--eps is an absolute l2 radius in sinogram units instead of relative to ||y||_2",
                            group="objective")
    allow_large_eps: bool = _allow_large_eps("objective")
    lam: float | None = option(None, "weight lambda of the perturbed term mse(f(y + delta), x)", unit="dimensionless",
                               parse=nonneg_float, group="objective",
                               default_text="0.5 for minmax (its clean error stays within 2 % of plain's, "
                               "docs/training.md), 1 for pgd/universal/jitter: each objective's own default")
    adversary_mode: str = option(
        _objective_default("minmax", "mode"), "minmax: the adversary G. shared: one learned direction u at the full "
        "radius, moved by normalised ascent with the gradient of f's own backward pass (no extra pass); memory: one "
        "direction per training sample, carried across epochs and moved the same way at each visit (sample-specific at "
        "shared's cost; new samples start at u); conditioned: normalize(u + h(y)) with a CNN h (the paper's "
        "y-dependent G); project / sphere / penalty: a CNN alone with its own Adam ascent passes (kept for comparison: "
        "weak in CT, docs/training.md)",
        choices=Library("ctrobust.models.adversary:MODES"), group="objective")
    u_step: float = option(_objective_default("minmax", "u_step"), "minmax shared/memory/conditioned: normalised ascent "
                           "step of the unit direction u (memory: of each visited sample's direction) per f step", unit="dimensionless, a fraction of ||u|| = 1",
                           parse=positive_float, group="objective")
    g_lr: float = option(_objective_default("minmax", "g_lr"), "minmax: Adam learning rate of G's network (h in "
                         "conditioned mode, the CNN in project/sphere/penalty)", parse=positive_float, group="objective")
    g_steps: int = option(_objective_default("minmax", "g_steps"), "minmax project/sphere/penalty: ascent passes on "
                          "the adversary per f step (universal: --universal-steps)", parse=positive_int,
                          group="objective")
    pgd_steps: int = option(_objective_default("pgd", "steps"), "pgd: projected gradient ascent steps per sample per "
                            "f step", parse=positive_int, group="objective")
    universal_steps: int = option(_objective_default("universal", "steps"), "universal: normalised ascent steps of "
                                  "the shared direction u per f step", parse=positive_int, group="objective")
    mu: float = option(_objective_default("weight-decay", "mu"), "weight-decay: weight mu of sum ||theta||^2 added to "
                       "the per-pixel MSE", parse=nonneg_float, group="objective")
    beta: float = option(_objective_default("parseval", "beta"), "parseval: retraction strength beta (W <- (1+beta) W "
                         "- beta W W^T W after each step)", parse=nonneg_float, group="objective")

    epochs: int | None = option(None, "passes over the training set", parse=positive_int, group="optimisation",
                                exclusive="length", default_text="10 when --max-steps is not given")
    max_steps: int | None = option(None, "stop after this many optimiser steps in total, counting steps before a "
                                   "--resume", parse=nonneg_int, group="optimisation", exclusive="length",
                                   default_text="--epochs")
    batch_size: int = option(signature_default(_FIT, "batch_size"), "images per step per process (global batch = this "
                             "x number of processes)", parse=positive_int, group="optimisation")
    lr: float = option(signature_default(_FIT, "lr"), "Adam learning rate of the network", parse=positive_float,
                       group="optimisation")
    scheduler: str = option(signature_default(_FIT, "scheduler"), "learning-rate schedule over all steps: cosine to 0, "
                            "step (x0.1 at 50 % and 75 %), constant",
                            choices=Library("ctrobust.training.trainer:SCHEDULERS"), group="optimisation")
    seed: int = option(signature_default(_FIT, "seed"), "seed of the weights, the adversary and the data order",
                       parse=nonneg_int, group="optimisation")
    device: str = _device("optimisation")
    num_workers: int = option(signature_default(_FIT, "num_workers"), "DataLoader worker processes", parse=nonneg_int,
                              group="optimisation")

    out: str = option("runs/train", "run directory for logs, config.json, last.pt and best.pt", metavar="DIR",
                      group="output")
    resume: bool = option(False, "continue the run in --out from its last.pt (Ctrl-C or SIGTERM let the step in "
                          "progress finish and save last.pt first)", group="output")
    force: bool = option(False, "overwrite the run files in a non-empty --out", group="output")
    val_every: int | None = option(None, "validate and checkpoint every this many steps", parse=positive_int,
                                   group="output", default_text="at every epoch end")
    save_every: int | None = option(None, "also save last.pt every this many steps", parse=positive_int,
                                    group="output", default_text="only when validating")
    log_every: int = option(signature_default(_FIT, "log_every"), "write a step log row every this many steps",
                            parse=positive_int, group="output")
    progress: bool = option(True, "progress bar (only on a terminal)", group="output")

    def check(self) -> None:
        if self.epochs is not None and self.max_steps is not None:
            raise CtrobustError("give --epochs or --max-steps, not both")
        if self.resume and self.force:
            raise CtrobustError("--resume and --force contradict each other: choose one")
        for name, (objectives, _) in OBJECTIVE_FIELDS.items():
            if self.objective not in objectives and self.given(name):
                hint = " (universal: --universal-steps)" if name == "g_steps" and self.objective == "universal" else ""
                raise CtrobustError(f"{self.flag(name)} does not apply to --objective {self.objective}: it is an "
                                    f"option of {', '.join(objectives)}{hint}")
        keys = [model_option_value(t)[0] for t in self.model_option]
        if len(set(keys)) < len(keys):
            raise CtrobustError(f"--model-option gives {sorted({k for k in keys if keys.count(k) > 1})} more than once")
        if self.model == "fbpconvnet":
            own = sorted(set(keys) & set(FBPCONVNET_FIELDS))
            if own:
                raise CtrobustError(f"--model-option {own[0]}=...: give FBPConvNet's {own[0]} with "
                                    f"{self.flag(own[0])}")
        else:
            given = [self.flag(k) for k in FBPCONVNET_FIELDS if self.given(k)]
            if given:
                raise CtrobustError(f"{', '.join(given)} only apply to --model fbpconvnet; give the options of "
                                    f"--model {self.model} with --model-option KEY=VALUE")

    def model_config(self) -> dict:
        """The model's description ``{"type": model, **options}`` for :func:`ctrobust.models.build_model`."""
        options = dict(model_option_value(t) for t in self.model_option)
        if self.model == "fbpconvnet":
            options = {**{k: getattr(self, k) for k in FBPCONVNET_FIELDS}, **options}
        return {"type": self.model, **options}

    def objective_options(self) -> dict:
        """The keyword arguments of the objective's class: the fields that apply to it (and the seed)."""
        options = {}
        for name, (objectives, keyword) in OBJECTIVE_FIELDS.items():
            value = getattr(self, name)
            if self.objective not in objectives or value is None:
                continue
            options[keyword] = (not value) if name == "absolute" else value
        return {**options, "seed": self.seed}


# ======================================================================================================
def tv_weight(text: str):
    """``--tv-tau``: a number >= 0, or ``auto`` (chosen on the validation split at the run's noise)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return nonneg_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or auto, got {text!r}") from None


#: dedicated flags for the main options of each method: (method, option, parse, help). The defaults shown
#: in --help are read from the library signatures (ctrobust.reconstruction.methods.method_options).
METHOD_FLAGS = (
    ("tv", "tau", tv_weight,
     "TV weight tau in min_x 1/2 ||A x - y||_2^2 + tau TV(x) (x >= 0). Unit: that of the data term "
     "1/2 ||A x - y||^2 (squared sinogram units: a bin is a line integral summing ~N pixels of [0, 1] intensity) "
     "per unit of TV(x) (sum over pixels of the gradient magnitude, [0, 1] intensity, unit pixel spacing); "
     "so it grows with the image size, the views and the noise (0.3 was best at 64 px, 60 views, 1 % noise; 10 at "
     "128 px, 143 views, LoDoPaB's low dose). auto: the weight of least mean error on the first 16 images of the "
     "validation split, measured with this run's geometry and noise (printed, and recorded in summary.json)"),
    ("tv", "iterations", positive_int,
     "Chambolle-Pock iterations; all are unrolled, and the attack differentiates through them (cost per attack step "
     "proportional)"),
    ("dip", "iterations", positive_int,
     "maximum Adam steps of the deep image prior fit, per sample (the attack differentiates through all steps run)"),
    ("dip", "channels", positive_int, "width (channels) of the first level of the un-trained U-Net"),
    ("dip", "depth", nonneg_int, "poolings of the un-trained U-Net"),
    ("dip", "lr", positive_float, "Adam learning rate of the DIP fit"),
    ("dip", "patience", positive_int,
     "early stopping: Adam steps without a new best error on the held-out measurement bins (dip.holdout, a "
     "fraction) before the fit stops"),
)


def _method_default(method: str, name: str):
    def get():
        from ctrobust.reconstruction.methods import method_options

        return method_options(method)[name]

    return get


def _method_option_help() -> str:
    return ("any keyword option of a method, repeatable, typed like its default, e.g. tv.nonneg=false, dip.seed=1, "
            "dip.holdout=0.1, fbp.filter=hann; see ctrobust.reconstruction.methods.method_options(NAME) for each method's options "
            "and library defaults")


_M = "method options"


@dataclasses.dataclass(frozen=True)
class ModelInputs(Spec):
    """What ``attack`` and ``evaluate`` share: the models (checkpoints and methods), the data, the device."""

    checkpoint: tuple[str, ...] = option((), "checkpoint written by 'ctrobust train' (e.g. runs/NAME/best.pt); repeat "
                                         "to compare several", repeat=True, metavar="PATH")
    method: tuple[str, ...] = option((), "a reconstruction method to evaluate as a model, repeatable: fbp, tv or dip "
                                     "(options below); a checkpoint path (.pt) here is loaded as with --checkpoint",
                                     repeat=True, metavar="NAME")
    data: str | None = option(None, "prepared-slice HDF5 file (ctrobust prepare-dicom / make-phantoms), or 'real' for "
                              "the real CT slices shipped with pydicom (an evaluation set of 2-4 slices, "
                              "docs/data.md)",
                              metavar="DATASET.h5", default_text="built-in random phantoms")
    split: str = option("test", "which split of the data to use", choices=SPLITS)
    n_samples: int | None = option(signature_default(_ROBUSTNESS, "max_samples"),
                                   "use only the first N samples of the split", parse=positive_int, metavar="N",
                                   default_text="all")
    batch_size: int = option(signature_default(_ROBUSTNESS, "batch_size"), "samples per batch",
                             parse=positive_int)
    size: int | None = option(None, "image side N of the phantoms and of the geometry, only when no checkpoint gives "
                              "one", unit="pixels", parse=positive_int, aliases=("--image-size",),
                              default_text=f"the data's size, {DEFAULT_SIZE} for phantoms")
    angles: int | None = option(None, "views on [0, pi) (parallel beam) or [0, 2 pi) (fan beam), only when no "
                                "checkpoint gives one (with a checkpoint, a different value is refused)",
                                parse=positive_int, aliases=("--n-angles",),
                                default_text=f"the checkpoint's, else {DEFAULT_ANGLES}")
    geometry: str | None = option(None, _GM["geometry"].metadata["help"] + " (with a checkpoint, a different value is "
                                  "refused)", choices=GEOMETRY_KINDS, default_text="the checkpoint's, else parallel")
    source_origin: float | None = _GM["source_origin"]
    origin_detector: float | None = _GM["origin_detector"]
    detector_spacing: float | None = _GM["detector_spacing"]
    protocol: str | None = _protocol()
    device: str = _device()
    fbp: bool = option(True, "add FBP as a reference (for CT operators)")
    photons: float | None = _photons(None, ": the models see the noisy measurement (seeded per sample by --seed)")
    out: str = option("results", "output folder (refused if not empty, unless --force)", metavar="DIR")
    force: bool = _force()
    progress: bool = _progress()
    tv_tau: float | str | None = option(None, METHOD_FLAGS[0][3], parse=tv_weight, metavar="TAU|auto", group=_M,
                                  library_default=_method_default("tv", "tau"))
    tv_iterations: int | None = option(None, METHOD_FLAGS[1][3], parse=positive_int, metavar="ITERATIONS", group=_M,
                                       library_default=_method_default("tv", "iterations"))
    dip_iterations: int | None = option(None, METHOD_FLAGS[2][3], parse=positive_int, metavar="ITERATIONS", group=_M,
                                        library_default=_method_default("dip", "iterations"))
    dip_channels: int | None = option(None, METHOD_FLAGS[3][3], parse=positive_int, metavar="CHANNELS", group=_M,
                                      library_default=_method_default("dip", "channels"))
    dip_depth: int | None = option(None, METHOD_FLAGS[4][3], parse=nonneg_int, metavar="DEPTH", group=_M,
                                   library_default=_method_default("dip", "depth"))
    dip_lr: float | None = option(None, METHOD_FLAGS[5][3], parse=positive_float, metavar="LR", group=_M,
                                  library_default=_method_default("dip", "lr"))
    dip_patience: int | None = option(None, METHOD_FLAGS[6][3], parse=positive_int, metavar="PATIENCE", group=_M,
                                      library_default=_method_default("dip", "patience"))
    method_option: tuple[str, ...] = option((), _method_option_help(), repeat=True, metavar="NAME.KEY=VALUE", group=_M)


@dataclasses.dataclass(frozen=True)
class AttackSpec(ModelInputs):
    """``ctrobust attack``: worst-case robustness curves of checkpoints and methods (docs/cli/attack.md)."""

    out: str = option("results/attack", "output folder (refused if not empty, unless --force)", metavar="DIR")
    eps: float | None = option(None, "perturbation size shown in the gallery and added to the grid: a fraction of each "
                               "sample's ||y||_2 (0.01 = 1 %), or absolute with --absolute", parse=nonneg_float,
                               default_text="0.01 without --eps-grid, else the grid's largest", radius=True)
    eps_grid: tuple[float, ...] | None = option(
        None, lambda: "comma-separated eps values of the robustness curve, same unit as --eps (the paper-style grid is "
        f"{','.join(map(str, Library('ctrobust.evaluation.robustness:DEFAULT_EPS_GRID').resolve()))})", parse=eps_list, metavar="E1,E2,...", default_text="0 and --eps",
        radius=True)
    attack: str = option(signature_default(_SETTINGS, "rule"),
                         "step rule: apgd = adaptive step with momentum and checkpoints (Croce & Hein 2020): exact on "
                         "FBP, 89-99.6 % (mean) of the best known worst case of trained networks in 100 steps, whose "
                         "loss has many local maxima: a lower bound, --restarts 2 prints the spread of independent "
                         "runs (docs/robustness.md); pga = fixed step 2.5 r / steps (Madry et al.), as many "
                         "papers use: it stalls at 71-94 %, so use it only to compare with such papers",
                         choices=Library("ctrobust.attacks.settings:ATTACKS"))
    steps: int = option(signature_default(_SETTINGS, "steps"),
                        "gradient steps per restart and eps (each one forward and one backward pass of the model)",
                        parse=nonneg_int)
    restarts: int = option(signature_default(_SETTINGS, "restarts"),
                           "runs per eps from random points (with --warm-start the first starts from the previous "
                           "eps's worst perturbation); the worst iterate over all is kept; with 2 or more the "
                           "restart_spread column and a printed line say how far the second-best run fell short",
                           parse=positive_int)
    step_size: float | None = option(signature_default(_SETTINGS, "step_size"), "apgd: initial step, pga: fixed step, as a fraction of the ball radius",
                                     parse=positive_float, default_text="4 for apgd, 2.5 / steps for pga")
    extend: int = option(signature_default(_SETTINGS, "extend"),
                         "continuations: while a sample's best loss still rose by more than 0.5 % over the last fifth "
                         "of its run, continue it from its best point by max(steps / 2, 10) more steps, at most N "
                         "times per eps (each a pass over the batch, only when needed); 0: exactly --steps x "
                         "--restarts", parse=nonneg_int, metavar="N")
    warm_start: bool = option(signature_default(_SETTINGS, "warm_start"),
                              "start each eps's first run from the previous eps's worst perturbation, rescaled, instead "
                              "of a random point (measured weaker on trained FBPConvNets: it stays in the smaller ball's "
                              "basin; without it the rescaled perturbation is still tried, one forward pass)")
    linearization: bool = option(signature_default(_ROBUSTNESS, "linearization"), "compute the Jacobian norm ||J_f(y)||_2 and the first-order (for FBP: exact) "
                                 "worst case per sample, by Lanczos once per batch for the whole grid. Cost per "
                                 "batch: for a checkpoint up to 30 iterations of about 3 backward passes each "
                                 "(~60-90 backward passes, often more than the attack itself: at 512 px several "
                                 "minutes), for FBP up to 300 cheap iterations (one FBP and its adjoint each, "
                                 "stopping when converged); a progress bar shows them, summary.json records "
                                 "them; --no-linearization skips them (docs/performance.md)")
    verify: int = option(0, "also attack the first N samples with a much stronger budget (--verify-steps x "
                         "--verify-restarts) and report default / strong per eps (1.0 = the default found the worst "
                         "case); 0: off", parse=nonneg_int, metavar="N")
    verify_steps: int = option(Library("ctrobust.evaluation.robustness:VERIFY_STEPS"),
                               "steps per restart of the --verify attack", parse=positive_int)
    verify_restarts: int = option(Library("ctrobust.evaluation.robustness:VERIFY_RESTARTS"),
                                  "random restarts of the --verify attack (seeded --seed + 1)", parse=positive_int)
    absolute: bool = option(False, "eps is an absolute l2 radius in sinogram units, not relative to ||y||_2")
    allow_large_eps: bool = _allow_large_eps()
    target: str = option(signature_default(_SETTINGS, "target"),
                         "maximise ||f(y + d) - x||^2 (truth) or the deviation ||f(y + d) - f(y)||^2 (clean)",
                         choices=Library("ctrobust.attacks.settings:TARGETS"))
    seed: int = option(signature_default(_SETTINGS, "seed"),
                       "seed of the random starts and of the random-noise reference (>= 0)", parse=nonneg_int)

    def attack_settings(self):
        """The attack of every eps, as one value (:class:`~ctrobust.attacks.AttackSettings`)."""
        from ctrobust.attacks.settings import AttackSettings

        return AttackSettings(rule=self.attack, steps=self.steps, restarts=self.restarts, step_size=self.step_size,
                              target=self.target, relative=not self.absolute, warm_start=self.warm_start,
                              seed=self.seed, extend=self.extend)

    def verify_settings(self, config: dict):
        """The ``--verify`` attack of a curve recorded as ``config``: ``--verify-steps`` x ``--verify-restarts``
        (:func:`~ctrobust.evaluation.robustness.verification_settings`), seeded ``--seed + 1``."""
        from ctrobust.evaluation.robustness import verification_settings

        return verification_settings(config, steps=self.verify_steps, restarts=self.verify_restarts,
                                     seed=self.seed + 1)

    def eps_settings(self) -> tuple[list[float], float]:
        """``(grid, gallery_eps)`` from ``eps`` / ``eps_grid``."""
        if self.eps_grid is None:
            eps = 0.01 if self.eps is None else self.eps
            return sorted({0.0, eps}), eps
        grid = sorted(set(self.eps_grid) | ({self.eps} if self.eps is not None else set()))
        return grid, self.eps if self.eps is not None else max(grid)


_S = "distribution shift"
_F = "small features"
_X = "operator mismatch"


def _feature_attack_steps():
    from ctrobust.evaluation.features import FEATURE_ATTACK

    return FEATURE_ATTACK.steps


def _mismatch_grid():
    from ctrobust.evaluation.mismatch_sweep import DEFAULT_MISMATCH_GRID

    return DEFAULT_MISMATCH_GRID


@dataclasses.dataclass(frozen=True)
class EvaluateSpec(ModelInputs):
    """``ctrobust evaluate``: clean metrics, distribution shift with test-time training, small features."""

    out: str = option("results/evaluate", "output folder (refused if not empty, unless --force)", metavar="DIR")
    seed: int = option(signature_default(_SHIFT, "seed"),
                       "seed of the shift's measurement noise, of TTT's held-out bins, of the feature positions and "
                       "of the attack's random starts", parse=nonneg_int)
    shift: str | None = option(None, "data: test on other images (--shift-data); views: test on a geometry with "
                               "--shift-angles views (same weights; FBP/TV rebuilt on it); noise: add Gaussian noise "
                               "of relative level --shift-noise to y", choices=Library("ctrobust.evaluation.shift:SHIFT_KINDS"), group=_S,
                               default_text="no shift")
    shift_data: str | None = option(None, "--shift data: prepared-slice HDF5 file of the other images (same image "
                                    "size as the model), 'phantoms' for the built-in random phantoms or 'real' for the "
                                    "real CT slices (required with --shift data)", metavar="OTHER.h5", group=_S, default_text="none")
    shift_split: str | None = option(None, "--shift data: split of --shift-data", choices=SPLITS, group=_S,
                                     default_text="test")
    shift_angles: int | None = option(None, "--shift views: number of views on [0, pi) of the shifted geometry, same "
                                      "image size and detectors (e.g. trained at 143, tested at 60; required with "
                                      "--shift views)", parse=positive_int, metavar="N", group=_S, default_text="none")
    shift_noise: float | None = option(None, "--shift noise: relative Gaussian noise level of the shifted "
                                       "measurements, sigma = LEVEL * ||y||_2 / sqrt(size(y)) per sample, i.e. "
                                       "relative to the RMS of y (0.02 = 2 %; required with --shift noise)",
                                       parse=positive_float, metavar="LEVEL", group=_S, default_text="none")
    shift_base_noise: float | None = option(None, "relative noise level (same unit as --shift-noise) of every "
                                            "in-distribution measurement, and of the shifted ones for data/views "
                                            "shifts", parse=nonneg_float, metavar="LEVEL", group=_S,
                                            library_default=_lib("ctrobust.evaluation.shift:make_shift", "base_noise"))
    ttt: bool = option(False, "also run test-time training on the shifted measurements: each trained network is "
                       "fine-tuned per sample on ||y - A f(y)||_1 / ||y||_1 with held-out bins for early stopping "
                       "(methods without weights are skipped)", group=_S)
    ttt_steps: int | None = option(None, "maximum Adam steps of test-time training per sample", parse=positive_int,
                                   metavar="N", group=_S, library_default=_lib("ctrobust.reconstruction.ttt:test_time_train", "steps"))
    ttt_lr: float | None = option(None, "Adam learning rate of test-time training", parse=positive_float, metavar="LR",
                                  group=_S, library_default=_lib("ctrobust.reconstruction.ttt:test_time_train", "lr"))
    ttt_patience: int | None = option(None, "steps without a new best held-out error before test-time training stops",
                                      parse=positive_int, metavar="N", group=_S,
                                      library_default=_lib("ctrobust.reconstruction.ttt:test_time_train", "patience"))
    ttt_holdout: float | None = option(None, "fraction of measurement bins held out for self-validation, in (0, 1)",
                                       parse=fraction, metavar="FRACTION", group=_S,
                                       library_default=_lib("ctrobust.reconstruction.ttt:test_time_train", "holdout"))
    small_features: bool = option(False, "run the small-feature evaluation", group=_F)
    n_features: int | None = option(None, "disks per image (non-overlapping, inside the body)", parse=positive_int,
                                    metavar="K", group=_F,
                                    library_default=_lib("ctrobust.evaluation.features:evaluate_features", "n_features"))
    feature_radius: float | None = option(None, "disk radius", unit="pixels", parse=positive_float, metavar="PIXELS",
                                          group=_F, library_default=_lib("ctrobust.evaluation.features:evaluate_features", "radius"))
    feature_contrast: float | None = option(None, "intensity added inside each disk, in the images' [0, 1] units "
                                            "(negative: a dark feature)", parse=float, metavar="C", group=_F,
                                            library_default=_lib("ctrobust.evaluation.features:evaluate_features", "contrast"))
    eps_grid: tuple[float, ...] | None = option(
        None, "attack sizes of the small-feature evaluation, relative to each sample's ||y||_2 (0.01 = 1 %); 0 (clean) "
        "is always evaluated", parse=eps_list, metavar="E1,E2,...", group=_F, aliases=("--eps",),
        library_default=_lib("ctrobust.evaluation.features:evaluate_features", "eps"), radius=True)
    allow_large_eps: bool = _allow_large_eps(_F)
    feature_attack_steps: int | None = option(None, "attack (APGD) steps per eps", parse=positive_int, metavar="N", group=_F,
                                              library_default=_feature_attack_steps)
    attack_region: str | None = option(None, "what the attack maximises: the squared error on the whole image, or "
                                       "only inside the disks (an attack trying to erase the features)",
                                       choices=("image", "features"), group=_F,
                                       library_default=_lib("ctrobust.evaluation.features:evaluate_features", "attack_region"))
    detection_threshold: float | None = option(None, "a feature counts as recovered when recovered contrast / true "
                                               "contrast >= this", parse=float, metavar="RATIO", group=_F,
                                               library_default=_lib("ctrobust.evaluation.features:evaluate_features", "threshold"))
    mismatch: bool = option(False, "operator mismatch: measure the test images with perturbed scanners A' (angle "
                            "offset, detector shift, per-detector gains, missing views; MismatchedRadon) and "
                            "reconstruct with the models built for A; reports the error against the mismatch size, "
                            "||(A' - A) x|| / ||A x|| (the unit of the attack's eps) and the worst case over a small "
                            "grid of combined mismatches (mismatch*.csv, mismatch.png)", group=_X)
    mismatch_angles: tuple[float, ...] | None = option(
        None, "angle offsets of the sweep", unit="degrees", parse=eps_list, metavar="D1,D2,...", group=_X,
        library_default=lambda: ",".join(map(str, _mismatch_grid()["angle"])))
    mismatch_shifts: tuple[float, ...] | None = option(
        None, "detector (centre-of-rotation) shifts of the sweep", unit="pixels", parse=eps_list, metavar="S1,S2,...",
        group=_X, library_default=lambda: ",".join(map(str, _mismatch_grid()["shift"])))
    mismatch_gains: tuple[float, ...] | None = option(
        None, "per-detector gain errors of the sweep: standard deviation of g_j - 1 (0.01 = 1 %)", parse=eps_list,
        metavar="G1,G2,...", group=_X, library_default=lambda: ",".join(map(str, _mismatch_grid()["gain"])))
    mismatch_views: tuple[float, ...] | None = option(
        None, "numbers of missing views of the sweep (filled by interpolating the neighbouring views)",
        parse=eps_list, metavar="K1,K2,...", group=_X,
        library_default=lambda: ",".join(map(str, _mismatch_grid()["views"])))

    def check(self) -> None:
        """Refuse options that do nothing in this combination, and missing required ones."""
        only = {"shift_data": "data", "shift_split": "data", "shift_angles": "views", "shift_noise": "noise"}
        for name, kind in only.items():
            if getattr(self, name) is not None and self.shift != kind:
                raise CtrobustError(f"{self.flag(name)} only applies to --shift {kind}"
                                    + ("" if self.shift else " (no --shift given)"))
        if self.shift is None and self.shift_base_noise is not None:
            raise CtrobustError("--shift-base-noise only applies with --shift")
        if self.shift == "data" and self.shift_data is None:
            raise CtrobustError("--shift data needs --shift-data OTHER.h5 (the other images, prepared at the model's "
                                "image size) or --shift-data phantoms")
        if self.shift == "views" and self.shift_angles is None:
            raise CtrobustError("--shift views needs --shift-angles N (the views of the shifted geometry, e.g. 60)")
        if self.shift == "noise":
            if self.shift_noise is None:
                raise CtrobustError("--shift noise needs --shift-noise LEVEL (relative to the RMS of y, e.g. 0.02)")
            if self.shift_noise <= (self.shift_base_noise or 0.0):
                raise CtrobustError(f"--shift-noise {self.shift_noise} must exceed --shift-base-noise "
                                    f"{self.shift_base_noise or 0.0} to be a shift")
        if self.ttt and self.shift is None:
            raise CtrobustError("--ttt needs --shift (test-time training is evaluated under a distribution shift)")
        given = [self.flag(k) for k in ("ttt_steps", "ttt_lr", "ttt_patience", "ttt_holdout") if getattr(self, k) is not None]
        if given and not self.ttt:
            raise CtrobustError(f"{', '.join(given)} only apply with --ttt")
        given = [self.flag(k) for k in FEATURE_OPTIONS if getattr(self, k) is not None]
        if given and not self.small_features:
            raise CtrobustError(f"{', '.join(given)} only apply with --small-features")
        given = [self.flag(k) for k in MISMATCH_OPTIONS if getattr(self, k) is not None]
        if given and not self.mismatch:
            raise CtrobustError(f"{', '.join(given)} only apply with --mismatch")
        if self.mismatch_views is not None and any(v != int(v) for v in self.mismatch_views):
            raise CtrobustError("--mismatch-views takes whole numbers of views")


#: evaluate's mismatch fields -> kind of ctrobust.evaluation.mismatch_sweep.DEFAULT_MISMATCH_GRID
MISMATCH_OPTIONS = {"mismatch_angles": "angle", "mismatch_shifts": "shift", "mismatch_gains": "gain",
                    "mismatch_views": "views"}
#: evaluate's small-feature fields -> keyword of ctrobust.evaluation.features.evaluate_features (``settings.steps``:
#: the steps of its AttackSettings)
FEATURE_OPTIONS = {"n_features": "n_features", "feature_radius": "radius", "feature_contrast": "contrast",
                   "eps_grid": "eps", "feature_attack_steps": "settings.steps", "attack_region": "attack_region",
                   "detection_threshold": "threshold"}


# ======================================================================================================
def _window(text: str) -> str:
    import argparse

    from ctrobust.data.dicom import parse_window

    try:
        parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _window_help() -> str:
    from ctrobust.data.dicom import WINDOWS

    presets = ", ".join(f"{k} ({lv:g},{w:g})" for k, (lv, w) in WINDOWS.items())
    return (f"HU window mapped to [0, 1]: a preset, {presets}, or LEVEL,WIDTH in HU (write --window=-600,1500 when "
            "LEVEL is negative)")


def _prepare_default(name: str):
    return signature_default("ctrobust.data.prepare:prepare_dicom", name)


def _phantoms_default(name: str):
    return signature_default("ctrobust.data.make:make_phantoms", name)


@dataclasses.dataclass(frozen=True)
class PrepareDicomSpec(Spec):
    """``ctrobust prepare-dicom``: DICOM folders -> a de-identified prepared-slice HDF5 file (docs/cli/prepare-dicom.md)."""

    inputs: tuple[str, ...] = option((), "DICOM files or folders (searched recursively)", positional=True,
                                     repeat=True, metavar="INPUT", required=True)
    out: str | None = option(None, "output HDF5 file (the log goes to DATASET.log.json)", metavar="DATASET.h5",
                             required=True)
    size: int = option(_prepare_default("size"), "output image side (square slices, at least 8)", unit="pixels",
                       parse=image_size)
    window: str = option(_prepare_default("window"), _window_help, parse=_window)
    fov: float | None = option(_prepare_default("fov"), "output field of view, the same for every slice, centred",
                               unit="mm", parse=positive_float, default_text="each slice's own longer side")
    val_fraction: float = option(_prepare_default("val_fraction"), "fraction of patients in the val split",
                                 parse=nonneg_float)
    test_fraction: float = option(_prepare_default("test_fraction"), "fraction of patients in the test split",
                                  parse=nonneg_float)
    seed: int = option(_prepare_default("seed"), "seed of the patient split, >= 0 (deterministic for a seed)",
                       parse=nonneg_int)
    salt_file: str | None = option(_prepare_default("salt_file"), "secret file whose bytes salt the pseudonyms "
                                   "(stable keys across runs)", metavar="FILE", default_text="a random salt, never stored")
    workers: int = option(_prepare_default("workers"), "processes reading DICOM files in parallel", parse=positive_int)
    keep_flagged: bool = option(_prepare_default("keep_flagged"), "keep constant and saturated slices (QC flags them; "
                                "without this option they are skipped and listed)", group="quality control")
    max_clipped: float = option(_prepare_default("max_clipped"), "a slice with at least this fraction of pixels at the "
                                "window's minimum or maximum is saturated", parse=fraction, metavar="FRACTION",
                                group="quality control")
    allow_mixed_spacing: bool = option(_prepare_default("allow_mixed_spacing"), "write an output whose pixel sizes "
                                       "differ by more than a factor 2 (refused otherwise; --fov gives every slice one "
                                       "pixel size)", group="quality control")
    qc_page: bool = option(_prepare_default("qc_page"), "write DATASET.qc/qc.md: thumbnails per split and a pixel-size "
                           "histogram, no identifiers", group="quality control")
    force: bool = _force("an existing output file and QC folder (overwrite them)")
    progress: bool = _progress()


def _volumes_default(name: str):
    return signature_default("ctrobust.data.volumes:prepare_volumes", name)


def _finite_float(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class PrepareVolumesSpec(Spec):
    """``ctrobust prepare-volumes``: NIfTI CT volumes -> a de-identified prepared-slice HDF5 file
    (docs/cli/prepare-volumes.md)."""

    inputs: tuple[str, ...] = option((), "NIfTI files (.nii, .nii.gz) or folders (searched recursively for them)",
                                     positional=True, repeat=True, metavar="INPUT", required=True)
    out: str | None = option(None, "output HDF5 file (the log goes to DATASET.log.json, the QC page to DATASET.qc/)",
                             metavar="DATASET.h5", required=True)
    size: int = option(_volumes_default("size"), "output image side (square slices, at least 8)", unit="pixels",
                       parse=image_size)
    window: str = option(_volumes_default("window"), _window_help, parse=_window)
    fov: float | None = option(_volumes_default("fov"), "output field of view, the same for every slice, centred",
                               unit="mm", parse=positive_float, default_text="each slice's own longer side")
    hu_offset: float = option(_volumes_default("hu_offset"), "HU added to the (scl_slope/scl_inter scaled) voxel values: "
                              "0 for volumes in HU, -1024 for volumes stored as HU + 1024", unit="HU",
                              parse=_finite_float, metavar="HU")
    patient_pattern: str | None = option(_volumes_default("patient_pattern"), "regular expression searched in each "
                                         "file's path below its input folder; its first group (else the whole match) is "
                                         "the patient, so that several volumes of one person stay in one split",
                                         metavar="REGEX", default_text="each file is its own patient")
    val_fraction: float = option(_volumes_default("val_fraction"), "fraction of patients in the val split",
                                 parse=nonneg_float)
    test_fraction: float = option(_volumes_default("test_fraction"), "fraction of patients in the test split",
                                  parse=nonneg_float)
    seed: int = option(_volumes_default("seed"), "seed of the patient split, >= 0 (deterministic for a seed)",
                       parse=nonneg_int)
    salt_file: str | None = option(_volumes_default("salt_file"), "secret file whose bytes salt the pseudonyms "
                                   "(stable keys across runs)", metavar="FILE", default_text="a random salt, never stored")
    workers: int = option(_volumes_default("workers"), "processes reading volumes in parallel", parse=positive_int)
    keep_flagged: bool = option(_volumes_default("keep_flagged"), "keep constant and saturated slices (QC flags them; "
                                "without this option they are skipped and listed)", group="quality control")
    max_clipped: float = option(_volumes_default("max_clipped"), "a slice with at least this fraction of pixels at the "
                                "window's minimum or maximum is saturated", parse=fraction, metavar="FRACTION",
                                group="quality control")
    allow_mixed_spacing: bool = option(_volumes_default("allow_mixed_spacing"), "write an output whose pixel sizes "
                                       "differ by more than a factor 2 (refused otherwise; --fov gives every slice one "
                                       "pixel size)", group="quality control")
    qc_page: bool = option(_volumes_default("qc_page"), "write DATASET.qc/qc.md: thumbnails per split and a pixel-size "
                           "histogram, no identifiers", group="quality control")
    force: bool = _force("an existing output file and QC folder (overwrite them)")
    progress: bool = _progress()


@dataclasses.dataclass(frozen=True)
class MakePhantomsSpec(Spec):
    """``ctrobust make-phantoms``: random CT-like phantoms as a prepared-slice HDF5 file (docs/cli/make-phantoms.md)."""

    out: str | None = option(None, "output HDF5 file", metavar="DATASET.h5", required=True)
    n: int = option(_phantoms_default("n"), "number of random phantoms over all splits", parse=positive_int)
    size: int = option(_phantoms_default("size"), "image side", unit="pixels", parse=image_size)
    seed: int = option(_phantoms_default("seed"), "base seed (each split derives its own)", parse=nonneg_int)
    val_fraction: float = option(_phantoms_default("val_fraction"), "fraction of phantoms in val", parse=nonneg_float)
    test_fraction: float = option(_phantoms_default("test_fraction"), "fraction of phantoms in test",
                                  parse=nonneg_float)
    shepp_logan: bool = option(_phantoms_default("shepp_logan"), "append the Shepp-Logan phantom as the last test slice")
    force: bool = _force("an existing output file (overwrite it)")
    progress: bool = _progress()


@dataclasses.dataclass(frozen=True)
class DemoSpec(Spec):
    """``ctrobust demo``: the main job end to end on built-in phantoms (docs/cli/demo.md)."""

    out: str = option("runs/demo", "output folder (refused if it exists and is not empty, unless --force)",
                      metavar="DIR")
    size: int = option(64, "image side N of the N x N phantoms", unit="pixels", parse=image_size)
    angles: int = option(DEFAULT_ANGLES, "number of views on [0, pi) (parallel beam) or [0, 2 pi) (fan beam)",
                         parse=positive_int)
    geometry: str = _geometry_options()["geometry"]
    source_origin: float | None = _geometry_options()["source_origin"]
    origin_detector: float | None = _geometry_options()["origin_detector"]
    detector_spacing: float | None = _geometry_options()["detector_spacing"]
    max_steps: int = option(150, "optimiser steps per training run", parse=positive_int, aliases=("--steps",))
    channels: int = option(16, "U-Net channels at the first level", parse=positive_int)
    depth: int = option(3, "U-Net poolings", parse=positive_int)
    eps: float = option(0.01, "min-max training radius, relative to ||y||_2 per sample (0.01 = 1 % of the sinogram "
                        "norm)", parse=nonneg_float, radius=True)
    eps_grid: tuple[float, ...] = option((0.0, 0.005, 0.01, 0.02, 0.04), "attack radii, relative to ||y||_2 per sample",
                                         parse=eps_list, metavar="E1,E2,...", radius=True)
    allow_large_eps: bool = _allow_large_eps()
    attack_steps: int = option(200, "steps of the attack (APGD) per eps, each one forward and one "
                               "backward pass of the model (twice the attack's default: 100 left the demo's networks "
                               "unconverged at eps 0.04)", parse=positive_int)
    n_samples: int = option(8, "test phantoms attacked", parse=positive_int, aliases=("--n-test",))
    photons: float | None = _photons(None, ": both networks train on noisy data and the attack perturbs the noisy "
                                     "measurement; the figure adds the error of the noise itself (the dose line)")
    seed: int = option(0, "seed (>= 0) of model initialisation, data order and attacks", parse=nonneg_int)
    device: str = _device()
    quick: bool = option(False, "a seconds-long smoke run (32 px, 30 views, 4 steps, tiny U-Net) overriding the sizes "
                         "above")
    force: bool = option(False, "write into a non-empty --out, replacing earlier demo results")
    progress: bool = _progress()

    #: what --quick sets
    QUICK = {"size": 32, "angles": 30, "max_steps": 4, "channels": 4, "depth": 2, "n_samples": 2, "attack_steps": 3,
             "eps_grid": (0.0, 0.01)}

    def settings(self) -> "DemoSpec":
        """This spec with the --quick sizes applied (when ``quick``)."""
        return self.replace(**self.QUICK, quick=False) if self.quick else self


@dataclasses.dataclass(frozen=True)
class ReportSpec(Spec):
    """``ctrobust report``: one Markdown or HTML report of several result folders (docs/cli/report.md)."""

    results: tuple[str, ...] = option((), "result folders (each with a summary.json)", positional=True, repeat=True,
                                      metavar="RESULTS_DIR", required=True)
    out: str = option("report.md", "report file; the suffix picks the format (.md Markdown, .html self-contained HTML)",
                      metavar="REPORT.md|REPORT.html")
    force: bool = option(False, "overwrite an existing report file")


# ======================================================================================================
#: the models of ``ctrobust benchmark`` by default: the classical references and FBPConvNet's three objectives
#: (Learned Primal-Dual, ``lpd-plain``, is opt-in: 17x FBPConvNet's training step, it alone would take --quick past
#: its 15 minutes on 2 cores)
BENCHMARK_MODELS = ("fbp", "fbp-hann", "tv", "fbpconvnet-plain", "fbpconvnet-minmax", "fbpconvnet-pgd")
#: the classical rows ``ctrobust benchmark`` knows: name -> (``ctrobust attack --method``, its ``--method-option``s)
BENCHMARK_METHODS = {"fbp": ("fbp", ()), "fbp-hann": ("fbp", ("fbp.filter=hann",)), "tv": ("tv", ())}


def model_names(text: str) -> tuple[str, ...]:
    """Comma-separated benchmark models: a method of :data:`BENCHMARK_METHODS` (``fbp``, ``fbp-hann``, ``tv``) or
    ``ARCH-OBJECTIVE`` (e.g. ``fbpconvnet-minmax``)."""
    import argparse

    from ctrobust.training.objectives import OBJECTIVES

    names = tuple(p for p in str(text).replace(" ", "").strip("()[]").replace("'", "").split(",") if p)
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated models such as fbp,tv,fbpconvnet-plain")
    for name in names:
        arch, _, objective = name.rpartition("-")
        if name not in BENCHMARK_METHODS and not (arch and objective in OBJECTIVES):
            raise argparse.ArgumentTypeError(
                f"unknown model {name!r}: give {', '.join(BENCHMARK_METHODS)} or ARCH-OBJECTIVE with an objective of "
                f"{', '.join(OBJECTIVES)} (e.g. fbpconvnet-minmax)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise argparse.ArgumentTypeError(f"model(s) {', '.join(dupes)} given twice")
    return names


_B = "what is run"
#: what ``ctrobust benchmark --quick`` sets where the spec leaves it open (BenchmarkSpec.QUICK)
BENCHMARK_QUICK = {"size": 64, "train_steps": 300, "n_samples": 4, "channels": 16, "depth": 3,
                   "attack": {"attack": "apgd", "steps": 20, "restarts": 2, "verify": 1, "verify_steps": 60,
                              "verify_restarts": 2}}
#: U-Net width and depth of the networks ``ctrobust benchmark`` trains without --quick (Jin et al.'s FBPConvNet)
BENCHMARK_NETWORK = {"channels": 64, "depth": 4}
#: optimiser steps per network ``ctrobust benchmark`` trains without --quick (issue 22: to a plateau, >= 1500)
BENCHMARK_TRAIN_STEPS = 1500
_Q, _QA = BENCHMARK_QUICK, BENCHMARK_QUICK["attack"]


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec(Spec):
    """``ctrobust benchmark``: train, attack and rank models under a named protocol (docs/cli/benchmark.md)."""

    show_list: bool = option(False, "print the protocols with a one-line card each and exit", flag="--list")
    protocol: str | None = option(None, "the protocol (ctrobust benchmark --list): geometry, dose, data, eps grid, "
                                  "attack budget", metavar="NAME", default_text="none; required unless --list")
    size: int | None = option(None, "image side N: the protocol rescaled to N x N pixels (same field of view and "
                              "detector width in mm; docs/benchmark.md)", unit="pixels", parse=image_size,
                              default_text="the protocol's own size; 64 with --quick")
    models: tuple[str, ...] = option(BENCHMARK_MODELS, "comma-separated models: fbp, fbp-hann (FBP with the Hann "
                                     "filter) and tv (classical, nothing to train; its weight chosen on validation phantoms at the protocol's dose) and ARCH-OBJECTIVE networks trained here (fbpconvnet-plain, "
                                     "fbpconvnet-minmax, fbpconvnet-pgd, lpd-plain for Learned Primal-Dual, ...)", parse=model_names,
                                     metavar="M1,M2,...", group=_B)
    checkpoint: tuple[str, ...] = option((), "a model of your own to add as a row: a checkpoint written by ctrobust "
                                         "train with the protocol's geometry, labelled by its run folder's name or "
                                         "LABEL=PATH; repeatable", repeat=True, metavar="[LABEL=]PATH", group=_B)
    quick: bool = option(False, f"a small version: {_Q['size']} px unless --size, {_Q['train_steps']} training steps, "
                         f"U-Net {_Q['channels']} / {_Q['depth']}, {_Q['n_samples']} test samples, "
                         f"{_QA['attack'].upper()} {_QA['steps']} steps x {_QA['restarts']} restarts, verification "
                         f"{_QA['verify_steps']} x {_QA['verify_restarts']} on {_QA['verify']} samples; the "
                         "leaderboard says it is not verified", group=_B)
    steps: int | None = option(None, "optimiser steps per trained network (batch --batch-size)", parse=positive_int,
                               group=_B, default_text=f"{BENCHMARK_TRAIN_STEPS}; {_Q['train_steps']} with --quick")
    n_samples: int | None = option(None, "test samples attacked per model", parse=positive_int, metavar="N",
                                   group=_B, default_text=f"the test split (32 built-in phantoms); {_Q['n_samples']} with --quick")
    channels: int | None = option(None, "U-Net channels of the first level of the trained fbpconvnet networks",
                                  parse=positive_int, group=_B, default_text=f"{BENCHMARK_NETWORK['channels']} "
                                  f"(Jin et al.); {_Q['channels']} with --quick")
    depth: int | None = option(None, "U-Net poolings of the trained fbpconvnet networks", parse=nonneg_int, group=_B,
                               default_text=f"{BENCHMARK_NETWORK['depth']} (Jin et al.); {_Q['depth']} with --quick")
    batch_size: int = option(8, "training images per optimiser step", parse=positive_int, group=_B)
    attack_steps: int | None = option(None, "APGD steps per restart and eps of every model's attack", parse=positive_int,
                                      metavar="N", group=_B, default_text="the protocol's (raj2020: 300); "
                                      f"{_QA['steps']} with --quick; fewer than the protocol's: not verified")
    restarts: int | None = option(None, "random restarts of every model's attack", parse=positive_int, group=_B,
                                  default_text=f"the protocol's (raj2020: 2); {_QA['restarts']} with --quick; fewer "
                                  "than the protocol's: not verified")
    verify: int | None = option(None, "samples attacked again with the much stronger verification budget", parse=nonneg_int,
                                metavar="N", group=_B, default_text=f"the protocol's (raj2020: 8); {_QA['verify']} with "
                                "--quick; fewer than the protocol's: not verified")
    verify_steps: int | None = option(None, "steps per restart of the verification attack", parse=positive_int, group=_B,
                                      default_text=f"the protocol's (raj2020: 300); {_QA['verify_steps']} with --quick")
    verify_restarts: int | None = option(None, "restarts of the verification attack", parse=positive_int, group=_B,
                                         default_text=f"the protocol's (raj2020: 5); {_QA['verify_restarts']} with --quick")
    extend: int | None = option(None, "attack continuations per eps (ctrobust attack --extend): while a sample's "
                                "loss still rises, its run continues from its best point; 0: exactly --attack-steps x "
                                "--restarts, as leaderboards made before continuations existed (the protocol's budget "
                                "counts steps x restarts; continuations only add to it)", parse=nonneg_int,
                                metavar="N", group=_B, default_text="2, as ctrobust attack")
    seed: int = option(0, "seed (>= 0) of the networks' weights, the data order and the attacks' random starts",
                       parse=nonneg_int, group=_B)
    out: str = option("runs/benchmark", "benchmark folder: created, or a benchmark folder of the same protocol and "
                      "settings, which is continued (finished models are reused, new ones added)", metavar="DIR")
    device: str = _device()
    progress: bool = _progress()

    def check(self) -> None:
        if not self.show_list and self.protocol is None:
            raise CtrobustError("give --protocol NAME (ctrobust benchmark --list shows them)")
        import argparse

        try:
            model_names(",".join(self.models))  # duplicates and unknown names, also from Python
        except argparse.ArgumentTypeError as exc:
            raise CtrobustError(f"--models: {exc}") from None
