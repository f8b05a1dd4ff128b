"""Reconstruction methods by name: the registry behind ``--method fbp|tv|dip``.

A *method* is a reconstruction that is not a trained checkpoint (FBP; later TV, the deep image
prior, ...). Each is built by a function registered in :data:`METHODS`:

``builder(operator, **options) -> f``, ``f`` a differentiable callable (ideally an ``nn.Module``)
mapping measurements ``(B, 1, A, D)`` (or ``(B, m)``) to images ``(B, 1, N, N)`` (or ``(B, n)``),
with an ``.operator`` attribute. Adding a method is one call::

    from ctrobust.reconstruction.methods import register_method
    register_method("tv", lambda operator, **kw: TVReconstruction(operator, **kw))

after which ``ctrobust attack --method tv`` works. A builder may also be registered lazily as a
``"module:function"`` string, so importing this module stays cheap and free of cycles.

Options: ``build_method(name, operator, **options)`` passes keyword options to the builder. Which
options a method has, and their defaults, are read from one library signature per method
(:data:`METHOD_SIGNATURES`: FBP -> :class:`FBPReconstruction`, TV -> ``TVReconstruction``, DIP ->
``deep_image_prior``) by :func:`method_options`, so the command line cannot disagree with the
library. :func:`parse_method_option` turns ``NAME.KEY=VALUE`` text (``--method-option``) into a typed
value; unknown names, keys and bad values raise :class:`CtrobustError` naming what is accepted.

Turning ``--checkpoint`` paths and ``--method`` names into labelled reconstructions is the application
layer's job (:func:`ctrobust.app.inputs.load_reconstructions`); reading a checkpoint is
:func:`ctrobust.training.checkpoint.load_model`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ctrobust.errors import CtrobustError

__all__ = [
    "METHODS",
    "METHOD_SIGNATURES",
    "register_method",
    "build_method",
    "method_options",
    "parse_method_option",
    "split_methods",
    "FBPReconstruction",
    "move_to",
]


class FBPReconstruction(nn.Module):
    """Filtered backprojection alone as a model: ``(B, 1, A, D) -> (B, 1, N, N)``, linear and differentiable.

    Parameters
    ----------
    operator : RadonTransform
        Must provide ``fbp(y, filter=...)``.
    filter : str
        FBP filter ("ram-lak", "shepp-logan", "cosine", "hann").
    """

    #: FBP is linear in the measurements: its worst case is exact (:mod:`ctrobust.attacks.worst_case`)
    is_linear = True

    def __init__(self, operator, filter: str = "ram-lak"):
        super().__init__()
        if not hasattr(operator, "fbp"):
            raise CtrobustError(f"method 'fbp' needs a CT operator with fbp(), got {type(operator).__name__}")
        self.operator = operator
        self.filter = filter

    def to_config(self) -> dict:
        return {"type": "FBPReconstruction", "filter": self.filter}

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.fbp(y, filter=self.filter)


def _build_fbp(operator, **options):
    return FBPReconstruction(operator, **options)


#: name -> builder(operator, **options) -> f, or a "module:function" string imported on first use.
METHODS: dict[str, Callable | str] = {"fbp": _build_fbp, "tv": "ctrobust.reconstruction.classical:build_tv",
                                     "dip": "ctrobust.reconstruction.classical:build_dip"}

#: name -> the callable whose keyword parameters (after the operator / measurement) are the method's
#: options, with their defaults; a "module:attribute" string is imported on first use. Methods not
#: listed here are described by their builder's own signature.
METHOD_SIGNATURES: dict[str, Callable | str] = {"fbp": FBPReconstruction,
                                                "tv": "ctrobust.reconstruction.classical:TVReconstruction",
                                                "dip": "ctrobust.reconstruction.classical:deep_image_prior"}

#: parameters of a signature that are not options a user sets (set by the model itself, or plumbing)
_NOT_OPTIONS = {"self", "operator", "y", "differentiable", "return_info", "progress"}

#: file endings that make a --method value a checkpoint path
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def _resolve(obj):
    if isinstance(obj, str):
        module, _, attr = obj.partition(":")
        return getattr(importlib.import_module(module), attr)
    return obj


def register_method(name: str, builder: Callable | str, *, overwrite: bool = False,
                    signature: Callable | str | None = None) -> None:
    """Register ``builder(operator, **options) -> f`` under ``name`` (for ``--method name``).

    ``signature``: the callable whose keyword parameters declare the options and their defaults
    (default: the builder itself; a builder taking only ``**options`` accepts any option unchecked).
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"method name must be a non-empty string, got {name!r}")
    if name in METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered (pass overwrite=True to replace it)")
    METHODS[name] = builder
    if signature is not None:
        METHOD_SIGNATURES[name] = signature
    else:
        METHOD_SIGNATURES.pop(name, None)


def _unknown_method(name: str) -> CtrobustError:
    return CtrobustError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))} "
                         "(for a trained model pass its checkpoint: --checkpoint RUN/best.pt)")


def method_options(name: str) -> dict[str, object] | None:
    """The keyword options of method ``name`` and their library defaults, in signature order.

    A required option maps to ``inspect.Parameter.empty``. Returns None when the method declares no
    options (its builder takes only ``**options``): any option is then passed on unchecked.
    Unknown names raise :class:`CtrobustError`.
    """
    if name not in METHODS:
        raise _unknown_method(name)
    source = _resolve(METHOD_SIGNATURES.get(name, METHODS[name]))
    try:
        params = list(inspect.signature(source).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return None
    if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) \
            and params[0].name not in _NOT_OPTIONS:
        params = params[1:]  # the operator, whatever its name
    out = {}
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) or p.name in _NOT_OPTIONS:
            continue
        out[p.name] = p.default
    if not out and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return out


def _describe_options(name: str) -> str:
    known = method_options(name)
    if known is None:
        return "any keyword option of its builder"
    if not known:
        return "none"
    return ", ".join(f"{k}={'(required)' if v is inspect.Parameter.empty else v!r}" for k, v in known.items())


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(text: str, default, where: str):
    """``text`` as the type of ``default`` (bool, int, float, str); untyped: int, float, bool or str."""
    low = text.strip().lower()
    if isinstance(default, bool):
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise CtrobustError(f"{where}: expected true or false, got {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise CtrobustError(f"{where}: expected an integer, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise CtrobustError(f"{where}: expected a number, got {text!r}") from None
    if isinstance(default, str):
        return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if low in _TRUE | _FALSE:
        return low in _TRUE
    if low == "none":
        return None
    return text


#: the value of a method option chosen on validation data by the command that runs the method (``tv.tau=auto``)
AUTO = "auto"
#: the (method, option) pairs that take :data:`AUTO`
TUNABLE = {("tv", "tau")}


def parse_method_option(text: str) -> tuple[str, str, object]:
    """``"NAME.KEY=VALUE"`` -> ``(name, key, value)``, the value typed like the option's default.

    Raises :class:`CtrobustError` for malformed text, an unknown method or option, or a value that
    does not convert (e.g. ``tv.iterations=abc``).
    """
    head, sep, value = text.partition("=")
    name, dot, key = head.strip().partition(".")
    if not sep or not dot or not name or not key.strip():
        raise CtrobustError(f"method option {text!r} is not NAME.KEY=VALUE (e.g. tv.tau=0.5, dip.seed=1, fbp.filter=hann)")
    key = key.strip()
    known = method_options(name)
    if known is None:
        return name, key, _convert(value, None, f"method option {text!r}")
    if key not in known:
        raise CtrobustError(f"method {name!r} has no option {key!r}; its options: {_describe_options(name)}")
    if (name, key) in TUNABLE and value.strip().lower() == AUTO:
        return name, key, AUTO
    return name, key, _convert(value, known[key], f"method option {text!r}")


def build_method(name: str, operator, **options):
    """Build the method ``name`` for ``operator`` with keyword ``options``.

    Unknown names, unknown options and values the builder rejects (``ValueError`` / ``TypeError``)
    raise a :class:`CtrobustError` naming the method and its options.
    """
    if name not in METHODS:
        raise _unknown_method(name)
    known = method_options(name)
    if known is not None:
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise CtrobustError(f"method {name!r} has no option(s) {', '.join(unknown)}; its options: {_describe_options(name)}")
    builder = _resolve(METHODS[name])
    try:
        return builder(operator, **options)
    except CtrobustError:
        raise
    except (TypeError, ValueError) as exc:
        raise CtrobustError(f"method {name!r} with options {options}: {exc}") from exc


def split_methods(values: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--method`` values -> ``(checkpoint paths, method names)``.

    A value that is not a registered name but looks like a file (ends in .pt/.pth/.ckpt, contains a
    path separator, or exists) is a checkpoint, as if given with ``--checkpoint``; anything else
    stays a method name (and fails later as unknown).
    """
    paths, names = [], []
    for v in values:
        looks_like_path = (v.lower().endswith(CHECKPOINT_SUFFIXES) or "/" in v or os.sep in v
                           or (os.altsep is not None and os.altsep in v) or Path(v).exists())
        if v not in METHODS and looks_like_path:
            paths.append(v)
        else:
            names.append(v)
    return paths, names


def move_to(model, device):
    """``model.to(device)`` for modules (operators inside serve any device); other callables as they are."""
    if not isinstance(model, nn.Module):
        return model
    return model.to(torch.device(device))
