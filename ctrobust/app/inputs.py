"""What ``run_attack`` and ``run_evaluate`` share: the models to compare (checkpoints, methods, the FBP
reference) and the data split, loaded and checked against each other before any output is written."""

from __future__ import annotations

import sys

from ctrobust.app.specs import DEFAULT_SIZE, METHOD_FLAGS, ModelInputs
from ctrobust.errors import CtrobustError

__all__ = ["load_inputs", "method_options", "image_shape", "progress_enabled", "noise_model"]


def method_options(spec: ModelInputs, methods) -> dict[str, dict]:
    """``{method: {option: value}}`` from the dedicated fields (``tv_tau``, ...) and ``method_option``;
    refuses options of methods that are not evaluated (``methods``: the method names, FBP included when
    it is added)."""
    from ctrobust.methods import parse_method_option

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
    """The measurement noise of ``spec.photons`` for ``operator`` (None: noise-free)."""
    photons = getattr(spec, "photons", None)
    if photons is None:
        return None
    from ctrobust.noise import LogPoissonNoise

    try:
        return LogPoissonNoise.for_operator(photons, operator)
    except ValueError as exc:
        raise CtrobustError(f"--photons: {exc}") from None


def progress_enabled(spec) -> bool:
    """Progress bars on a terminal, unless the spec turns them off."""
    return sys.stderr.isatty() and bool(getattr(spec, "progress", True))


def load_inputs(spec: ModelInputs, device):
    """``(reconstructions, dataset)`` for ``spec`` (checkpoints, methods, FBP reference, data split)."""
    from ctrobust.data import load_split
    from ctrobust.methods import load_reconstructions, split_methods

    paths, methods = split_methods(list(spec.method))
    for path in paths:
        print(f"--method {path}: a checkpoint path, loaded as with --checkpoint {path}", file=sys.stderr)
    checkpoints = list(spec.checkpoint) + paths
    dupes = sorted({m for m in methods if methods.count(m) > 1})
    if dupes:
        raise CtrobustError(f"--method {', '.join(dupes)} given twice; give each method once")

    def default_operator():
        from ctrobust.app.geometry import build_geometry
        from ctrobust.operators.radon import RadonTransform

        size = spec.size
        if spec.data is not None and spec.data != "real":
            size = load_split(spec.data, spec.split).image_size
        size = size or DEFAULT_SIZE
        return RadonTransform(build_geometry(spec, int(size), int(spec.angles)))

    if not checkpoints and not methods:
        raise CtrobustError(
            "nothing to evaluate: pass --checkpoint RUN/best.pt (repeatable) for trained models, "
            "and/or --method fbp for filtered backprojection alone (train a model with 'ctrobust train')"
        )
    add_fbp = spec.fbp and "fbp" not in methods
    options = method_options(spec, set(methods) | ({"fbp"} if add_fbp else set()))
    recs = load_reconstructions(checkpoints, methods, device=device, default_operator=default_operator, options=options)
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


def models_record(recs) -> list[dict]:
    """The ``models`` entry of ``summary.json``."""
    return [{"label": r.label, "source": r.source, "kind": r.kind, "info": r.info} for r in recs]


def method_options_record(recs) -> dict:
    """``{method: options}`` of the methods among ``recs`` (for the ``config`` of ``summary.json``)."""
    return {r.info["method"]: r.info.get("options", {}) for r in recs if r.kind == "method"}
