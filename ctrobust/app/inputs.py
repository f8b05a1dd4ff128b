"""What ``run_attack`` and ``run_evaluate`` share: the models to compare (checkpoints, methods, the FBP
reference) and the data split, loaded and checked against each other before any output is written."""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from ctrobust.app.specs import DEFAULT_ANGLES, DEFAULT_SIZE, METHOD_FLAGS, ModelInputs
from ctrobust.errors import CtrobustError

__all__ = ["load_inputs", "load_reconstructions", "Reconstruction", "method_option_values", "image_shape", "progress_enabled", "noise_model",
           "check_attackable", "check_geometry_flags", "acquisition_config", "choose_tv_weight", "TV_TUNING_IMAGES"]

#: validation images on which ``tv.tau=auto`` (and the benchmark's TV row) chooses TV's weight
TV_TUNING_IMAGES = 16


def method_option_values(spec: ModelInputs, methods) -> dict[str, dict]:
    """``{method: {option: value}}`` from the dedicated fields (``tv_tau``, ...) and ``method_option``;
    refuses options of methods that are not evaluated (``methods``: the method names, FBP included when
    it is added)."""
    from ctrobust.reconstruction.methods import parse_method_option

    options: dict[str, dict] = {}
    sources: dict[tuple, str] = {}
    for method, name, _, _ in METHOD_FLAGS:
        value = getattr(spec, f"{method}_{name}")
        if value is not None:
            options.setdefault(method, {})[name] = value
            sources[(method, name)] = spec.flag(f"{method}_{name}")
    for text in spec.method_option:
        name, key, value = parse_method_option(text)
        if (name, key) in sources and options[name][key] != value:
            raise CtrobustError(f"--method-option {text} contradicts {sources[(name, key)]} {options[name][key]}; "
                                "give it once")
        options.setdefault(name, {})[key] = value
        sources[(name, key)] = f"--method-option {name}.{key}"
    for name in options:
        if name not in methods:
            given = ", ".join(v for (m, _), v in sources.items() if m == name)
            raise CtrobustError(f"{given}: option(s) of method {name!r}, which is not evaluated; add --method {name}")
    return options


def image_shape(operator) -> tuple:
    """The (H, W) image shape of an operator's domain."""
    shape = tuple(getattr(operator, "image_shape", ()) or ())
    if not shape:
        dom = tuple(operator.domain_shape)
        shape = dom[1:] if len(dom) == 3 else dom
    return tuple(int(s) for s in shape)


def noise_model(spec, operator):
    """The measurement noise of a spec for ``operator`` (None: noise-free), built in one place for every command.

    ``spec.photons`` (``--photons``) gives low-dose CT noise with LoDoPaB's attenuation scale
    (:func:`ctrobust.operators.noise.make_noise`); a spec's ``read_noise`` (counts) and ``crosstalk``, where
    it has them, add LION's read noise and detector cross-talk.
    """
    if getattr(spec, "protocol", None) is not None:  # --protocol NAME: the protocol's noise, bound to the operator
        from ctrobust.app.acquisition import protocol_of

        noise = protocol_of(spec, image_shape(operator)[-1]).noise
        return None if noise is None else noise.bind(operator)
    photons = getattr(spec, "photons", None)
    read_noise = getattr(spec, "read_noise", None) or 0.0
    crosstalk = getattr(spec, "crosstalk", None) or 0.0
    if photons is None and not (read_noise or crosstalk):
        return None
    from ctrobust.operators.noise import make_noise

    try:
        return make_noise(photons, read_noise=read_noise, crosstalk=crosstalk, operator=operator)
    except ValueError as exc:
        raise CtrobustError(f"--photons: {exc}") from None


def progress_enabled(spec) -> bool:
    """Progress bars on a terminal, unless the spec turns them off."""
    from ctrobust.progress import on_terminal

    return on_terminal() and bool(getattr(spec, "progress", True))


def choose_tv_weight(operator, data, noise, *, seed: int, iterations: int, nonneg: bool = True, device="cpu"):
    """TV's weight for ``operator`` and ``noise``: :func:`~ctrobust.reconstruction.classical.select_tv_weight` on
    the first :data:`TV_TUNING_IMAGES` images of ``data``'s validation split (``None``: the built-in phantoms),
    measured with ``noise`` (seeded ``seed``; ``None``: noise-free). Returns ``(choice, description)``; raises
    :class:`CtrobustError` when the data have no validation split."""
    import torch

    from ctrobust.data import load_split
    from ctrobust.reconstruction.classical import select_tv_weight

    size = image_shape(operator)[-1]
    try:
        val = load_split(data, "val", size=size)
        x = torch.stack([torch.as_tensor(val[i]) for i in range(min(TV_TUNING_IMAGES, len(val)))])
    except (FileNotFoundError, KeyError, ValueError, IndexError, RuntimeError) as exc:
        raise CtrobustError(f"tv.tau=auto chooses TV's weight on the validation split, which {data or 'the phantoms'} "
                            f"does not give ({exc}); give a number (--tv-tau 10)") from None
    if not getattr(val, "holds_out", True):
        raise CtrobustError(f"tv.tau=auto chooses TV's weight on the validation split, but every split of --data {data} "
                            "is the same images (it is an evaluation set): the weight would be tuned on the test "
                            "images. Give a number (--tv-tau 10), or data with a validation split")
    x = x.to(device=device, dtype=torch.float32)
    if x.dim() == 3:
        x = x[:, None]
    with torch.no_grad():
        y = operator(x)
    if noise is not None:
        y = noise(y.cpu(), generator=torch.Generator().manual_seed(seed)).to(device)
    choice = select_tv_weight(operator, y, x, iterations=iterations, nonneg=nonneg)
    text = (f"the first {x.shape[0]} validation images of {data or 'the built-in phantoms'}, "
            + ("noise-free" if noise is None else f"with this run's noise seeded {seed}"))
    return choice, text


def _resolve_auto(spec, options: dict, operator, device) -> tuple[dict, dict]:
    """``(options, tuning)``: ``options`` with ``tv.tau=auto`` replaced by the chosen weight (printed), and
    ``{method: what was chosen}`` for :func:`load_reconstructions` to record (empty without ``auto``)."""
    from ctrobust.reconstruction.methods import AUTO, method_options

    tv = options.get("tv", {})
    if tv.get("tau") != AUTO:
        return options, {}
    defaults = method_options("tv")
    choice, text = choose_tv_weight(operator, getattr(spec, "data", None), noise_model(spec, operator),
                                    seed=getattr(spec, "seed", 0), iterations=int(tv.get("iterations", defaults["iterations"])),
                                    nonneg=bool(tv.get("nonneg", defaults["nonneg"])), device=device)
    print(f"TV weight tau = {choice.tau:g} (auto: mean error {choice.errors[choice.tau]:.4f} on {text}; "
          f"{len(choice.errors)} weights tried)", file=sys.stderr)
    return {**options, "tv": {**tv, "tau": choice.tau}}, {"tv": {**choice.to_config(), "data": text}}


def load_inputs(spec: ModelInputs, device):
    """``(reconstructions, dataset)`` for ``spec`` (checkpoints, methods, FBP reference, data split)."""
    from ctrobust.data import load_split
    from ctrobust.reconstruction.methods import split_methods

    paths, methods = split_methods(list(spec.method))
    for path in paths:
        print(f"--method {path}: a checkpoint path, loaded as with --checkpoint {path}", file=sys.stderr)
    checkpoints = list(spec.checkpoint) + paths
    dupes = sorted({m for m in methods if methods.count(m) > 1})
    if dupes:
        raise CtrobustError(f"--method {', '.join(dupes)} given twice; give each method once")

    def default_operator():
        from ctrobust.app.acquisition import build_geometry
        from ctrobust.operators.radon import RadonTransform

        size = spec.size
        if spec.data is not None and spec.data != "real":
            size = load_split(spec.data, spec.split).image_size
        size = size or DEFAULT_SIZE
        return RadonTransform(build_geometry(spec, int(size), int(spec.angles or DEFAULT_ANGLES)))

    if not checkpoints and not methods:
        raise CtrobustError(
            "nothing to evaluate: pass --checkpoint RUN/best.pt (repeatable) for trained models, "
            "and/or --method fbp for filtered backprojection alone (train a model with 'ctrobust train')"
        )
    add_fbp = spec.fbp and "fbp" not in methods
    options = method_option_values(spec, set(methods) | ({"fbp"} if add_fbp else set()))
    recs = load_reconstructions(checkpoints, methods, device=device, default_operator=default_operator, options=options,
                                resolve=lambda opts, operator: _resolve_auto(spec, opts, operator, device))
    check_geometry_flags(spec, [r for r in recs if r.kind == "checkpoint"])
    operator = recs[0].operator
    if add_fbp and hasattr(operator, "fbp"):
        recs += load_reconstructions((), ["fbp"], device=device, default_operator=lambda: operator, options=options)
    shape = image_shape(operator)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise CtrobustError(f"the operator's images are {shape}; attack and evaluate need square images")
    if spec.size is not None and checkpoints and spec.size != shape[0]:
        raise CtrobustError(f"--size {spec.size} disagrees with the checkpoint's {shape[0]} px; drop --size")
    try:
        dataset = load_split(spec.data, spec.split, size=shape[0])
    except FileNotFoundError as exc:
        raise CtrobustError(f"cannot open --data {spec.data}: {exc}") from None
    if getattr(dataset, "image_size", shape[0]) != shape[0]:
        raise CtrobustError(f"--data has {dataset.image_size} px images but the model expects {shape[0]} px; "
                            "use data prepared at the model's size")
    for r in recs[1:]:
        if image_shape(r.operator) != shape:
            raise CtrobustError(f"{r.label} reconstructs {image_shape(r.operator)} images, {recs[0].label} {shape}: "
                                "compare models of one image size")
    return recs, dataset


def models_record(recs, spec=None) -> list[dict]:
    """The ``models`` entry of ``summary.json``; each with the ``acquisition`` of its operator (and, with ``spec``,
    the noise of ``spec.photons``)."""
    from ctrobust.app.results import acquisition_record

    return [{"label": r.label, "source": r.source, "kind": r.kind, "info": r.info,
             "acquisition": acquisition_record(r.operator, noise_model(spec, r.operator) if spec is not None else None)}
            for r in recs]


# -- what was measured: the checkpoint's geometry wins, a flag that disagrees is refused ------------------------
def _geometry_kind(geometry) -> str | None:
    return {"ParallelBeam2D": "parallel", "FanBeam2D": "fan"}.get(type(geometry).__name__)


def check_geometry_flags(spec, checkpoint_recs) -> None:
    """Refuse ``--angles``, ``--geometry``, ``--size`` and the fan lengths when they disagree with a checkpoint's
    operator (its geometry is what the model was trained for and what is measured), naming the checkpoint's value.

    A flag that agrees is accepted; a flag given for a checkpoint whose operator has no scan geometry (CS) is
    refused. ``spec.angles`` / ``spec.geometry`` of ``None`` mean "not given"."""
    from ctrobust.app.acquisition import FAN_FIELDS

    given = {"angles": getattr(spec, "angles", None), "geometry": getattr(spec, "geometry", None),
             "size": getattr(spec, "size", None), **{k: getattr(spec, k, None) for k in FAN_FIELDS}}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return
    for rec in checkpoint_recs:
        geometry = getattr(rec.operator, "geometry", None)
        if _geometry_kind(geometry) is None:
            flags = ", ".join(spec.flag(k) for k in given if k != "size")
            if flags:
                raise CtrobustError(f"{flags}: {rec.source} holds a {type(rec.operator).__name__} operator without a "
                                    "scan geometry; drop the geometry flags")
            continue
        have = {"angles": geometry.n_angles, "geometry": _geometry_kind(geometry), "size": geometry.image_size,
                **{k: getattr(geometry, k, None) for k in FAN_FIELDS}}
        units = {"angles": " views", "size": " px", **{k: " px" for k in FAN_FIELDS}}
        for key, value in given.items():
            want = have.get(key)
            same = want == value if not isinstance(value, float) else want is not None and abs(want - value) <= 1e-9 * max(1.0, abs(want))
            if not same:
                shown = "no fan geometry (parallel beam)" if want is None else f"{want:g}{units.get(key, '')}" if isinstance(want, float) else f"{want}{units.get(key, '')}"
                raise CtrobustError(f"{spec.flag(key)} {value} disagrees with the checkpoint {rec.source}: it was trained "
                                    f"for {shown} ({_short_geometry(geometry)}); the checkpoint's geometry is what is "
                                    f"measured, so drop {spec.flag(key)}")


def _short_geometry(geometry) -> str:
    return f"{_geometry_kind(geometry)} beam, {geometry.image_size} px, {geometry.n_angles} views"


def acquisition_config(spec, recs) -> dict:
    """``{"acquisition": acquisition_record, "geometry": its one line}`` for a command's ``config``: the operator of
    the first reconstruction (the data's) with the noise of ``spec.photons``; when models differ in their operator,
    ``geometry`` lists each model's line."""
    from ctrobust.app.results import acquisition_record, acquisition_text

    records = [acquisition_record(r.operator, noise_model(spec, r.operator)) for r in recs]
    texts = [acquisition_text(rec) for rec in records]
    text = texts[0] if len(set(texts)) == 1 else "; ".join(f"{r.label}: {t}" for r, t in zip(recs, texts))
    return {"acquisition": records[0], "geometry": text}


def method_options_record(recs) -> dict:
    """``{method: options}`` of the methods among ``recs`` (for the ``config`` of ``summary.json``)."""
    return {r.info["method"]: r.info.get("options", {}) for r in recs if r.kind == "method"}


@dataclasses.dataclass
class Reconstruction:
    """A labelled reconstruction to evaluate: ``f`` with its ``operator`` and where it came from."""

    label: str
    f: Callable
    operator: object
    source: str  # checkpoint path or "method:<name>"
    kind: str  # "checkpoint" or "method"
    info: dict = dataclasses.field(default_factory=dict)


def _record_info(record) -> dict:
    """The small, JSON-able part of a checkpoint record: model description and factory, objective config, step,
    metrics, best."""
    if not isinstance(record, dict):
        return {}
    info = {}
    model = record.get("model")
    if isinstance(model, dict) and isinstance(model.get("config"), dict):
        info["model"] = {"config": model["config"], "factory": model.get("factory")}
    objective = record.get("objective")
    if isinstance(objective, dict):
        info["objective"] = objective.get("config", objective)
    for key in ("step", "metrics", "best"):
        if key in record:
            info[key] = record[key]
    return info


def _labels(paths: Sequence[Path]) -> list[str]:
    """Short unique labels: the run directory name, else more of the path."""
    labels = [p.parent.name or p.stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    return labels


def load_reconstructions(
    checkpoints: Sequence[str | os.PathLike] = (),
    methods: Sequence[str] = (),
    *,
    device="cpu",
    default_operator: Callable[[], object] | None = None,
    options: dict[str, dict] | None = None,
    resolve: Callable[[dict, object], tuple[dict, dict]] | None = None,
) -> list[Reconstruction]:
    """Checkpoints and named methods, ready to evaluate on ``device``.

    Methods use the operator of the first checkpoint, or ``default_operator()`` when no checkpoint
    is given; ``options`` maps a method name to its keyword options (:func:`build_method`). A
    method's ``info`` holds ``method`` (its name), ``options`` (all of them, library defaults filled in)
    and, when it has one, ``config()``. ``resolve(options, operator) -> (options, tuning)``, when given, replaces option
    values chosen on data (``tv.tau=auto``) once the methods' operator is known; ``tuning[name]`` is that method's
    info ``tuning``.
    Raises :class:`CtrobustError` when nothing is given or a checkpoint is unusable.
    """
    from torch import nn

    from ctrobust.reconstruction.methods import METHODS, build_method, method_options, move_to
    from ctrobust.training.checkpoint import load_model

    if not checkpoints and not methods:
        raise CtrobustError(
            "nothing to evaluate: pass --checkpoint RUN/best.pt (repeatable) for trained models "
            f"and/or --method NAME for a classical reconstruction ({', '.join(sorted(METHODS))})"
        )
    out: list[Reconstruction] = []
    paths = [Path(c) for c in checkpoints]
    for path, label in zip(paths, _labels(paths)):
        model, record = load_model(path, map_location="cpu")
        model = move_to(model, device).eval()
        info = _record_info(record)
        if hasattr(model, "config"):
            info["model"] = model.config()
        out.append(Reconstruction(label, model, model.operator, str(path), "checkpoint", info))
    if methods:
        if out:
            operator = out[0].operator
        elif default_operator is not None:
            operator = default_operator()
        else:
            raise CtrobustError("--method needs an operator: pass a --checkpoint or a geometry")
        options, tuning = dict(options or {}), {}
        if resolve is not None:
            options, tuning = resolve(options, operator)
        for name in methods:
            opts = dict(options.get(name, {}))
            f = build_method(name, operator, **opts)
            if isinstance(f, nn.Module):
                f = move_to(f, device).eval()
            label = name.upper() if name == "fbp" else name
            known = method_options(name)
            effective = {**{k: v for k, v in (known or {}).items() if v is not inspect.Parameter.empty}, **opts}
            info = {"method": name, "options": effective}
            if name in tuning:
                info["tuning"] = tuning[name]
            if hasattr(f, "to_config"):
                info["config"] = f.to_config()
            out.append(Reconstruction(label, f, operator, f"method:{name}", "method", info))
    labels = [r.label for r in out]
    if len(set(labels)) < len(labels):
        raise CtrobustError(f"two reconstructions share the label(s) {sorted({l for l in labels if labels.count(l) > 1})}; pass each once")
    return out


def check_attackable(recs, dataset, device) -> None:
    """One forward and backward pass of each reconstruction on the first sample's measurement, before any
    attack: a reconstruction autograd cannot differentiate (``torch.no_grad()``, a solver outside torch) is
    refused with a :class:`~ctrobust.attacks.NotDifferentiableError` saying what to do, instead of torch's
    "element 0 of tensors does not require grad" in the middle of the attack."""
    from ctrobust.attacks.differentiable import check_differentiable

    item = dataset[0]
    x = item[0] if isinstance(item, (tuple, list)) else item
    for rec in recs:
        y = rec.operator(x[None].to(device))
        check_differentiable(rec.f, y, label=f"{rec.label} ({rec.source})", purpose="the attack")
