"""Reconstruction methods by name, and loading what ``attack`` / ``evaluate`` compare.

A *method* is a reconstruction that is not a trained checkpoint (FBP; later TV, the deep image
prior, ...). Each is built by a function registered in :data:`METHODS`:

``builder(operator, **options) -> f``, ``f`` a differentiable callable (ideally an ``nn.Module``)
mapping measurements ``(B, 1, A, D)`` (or ``(B, m)``) to images ``(B, 1, N, N)`` (or ``(B, n)``),
with an ``.operator`` attribute. Adding a method is one call::

    from ctrobust.methods import register_method
    register_method("tv", lambda operator, **kw: TVReconstruction(operator, **kw))

after which ``ctrobust attack --method tv`` works. A builder may also be registered lazily as a
``"module:function"`` string, so importing this module stays cheap and free of cycles.

:func:`load_reconstructions` turns ``--checkpoint`` paths and ``--method`` names into labelled
models that share one place for error messages (missing / corrupt checkpoints).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ctrobust.errors import CtrobustError

__all__ = [
    "METHODS",
    "register_method",
    "build_method",
    "FBPReconstruction",
    "Reconstruction",
    "load_reconstructions",
    "load_model",
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

    def __init__(self, operator, filter: str = "ram-lak"):
        super().__init__()
        if not hasattr(operator, "fbp"):
            raise CtrobustError(f"method 'fbp' needs a CT operator with fbp(), got {type(operator).__name__}")
        self.operator = operator
        self.filter = filter

    def config(self) -> dict:
        return {"type": "FBPReconstruction", "filter": self.filter}

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.fbp(y, filter=self.filter)


def _build_fbp(operator, **options):
    return FBPReconstruction(operator, **options)


#: name -> builder(operator, **options) -> f, or a "module:function" string imported on first use.
METHODS: dict[str, Callable | str] = {"fbp": _build_fbp, "tv": "ctrobust.classical:build_tv",
                                     "dip": "ctrobust.classical:build_dip"}


def register_method(name: str, builder: Callable | str, *, overwrite: bool = False) -> None:
    """Register ``builder(operator, **options) -> f`` under ``name`` (for ``--method name``)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"method name must be a non-empty string, got {name!r}")
    if name in METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered (pass overwrite=True to replace it)")
    METHODS[name] = builder


def build_method(name: str, operator, **options):
    """Build the method ``name`` for ``operator``; unknown names raise a :class:`CtrobustError`."""
    if name not in METHODS:
        raise CtrobustError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    builder = METHODS[name]
    if isinstance(builder, str):
        module, _, func = builder.partition(":")
        builder = getattr(importlib.import_module(module), func)
    return builder(operator, **options)


@dataclasses.dataclass
class Reconstruction:
    """A labelled reconstruction to evaluate: ``f`` with its ``operator`` and where it came from."""

    label: str
    f: Callable
    operator: object
    source: str  # checkpoint path or "method:<name>"
    kind: str  # "checkpoint" or "method"
    info: dict = dataclasses.field(default_factory=dict)


def load_model(path: str | os.PathLike, map_location="cpu"):
    """Load a checkpoint's model (eval mode, with ``.operator``) and its stored record.

    Raises :class:`CtrobustError` with a clear message when the file is missing, not a checkpoint,
    or cannot be rebuilt.
    """
    path = Path(path)
    if not path.exists():
        raise CtrobustError(f"checkpoint {str(path)!r} does not exist; pass the best.pt (or last.pt) written by 'ctrobust train'")
    if path.is_dir():
        raise CtrobustError(f"checkpoint {str(path)!r} is a directory; pass the .pt file inside it (e.g. {path / 'best.pt'})")
    try:
        from ctrobust.training.checkpoint import load_checkpoint, read_checkpoint
    except ImportError as exc:  # pragma: no cover - the training package is part of ctrobust
        raise CtrobustError(f"cannot load checkpoints: {exc}") from exc
    try:
        record = read_checkpoint(path)
        model = load_checkpoint(path, map_location=map_location)
    except CtrobustError:
        raise
    except Exception as exc:  # corrupt, truncated or foreign files
        raise CtrobustError(f"checkpoint {str(path)!r} is not a readable ctrobust checkpoint ({type(exc).__name__}: {exc})") from exc
    if not hasattr(model, "operator"):
        raise CtrobustError(f"checkpoint {str(path)!r} holds a model without an operator; cannot form measurements")
    return model, record


def move_to(model, device):
    """``model.to(device)`` for modules (operators inside serve any device); other callables as they are."""
    if not isinstance(model, nn.Module):
        return model
    return model.to(torch.device(device))


def _record_info(record) -> dict:
    """The small, JSON-able part of a checkpoint record: objective config, step, metrics, best."""
    if not isinstance(record, dict):
        return {}
    info = {}
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
) -> list[Reconstruction]:
    """Checkpoints and named methods, ready to evaluate on ``device``.

    Methods use the operator of the first checkpoint, or ``default_operator()`` when no checkpoint
    is given. Raises :class:`CtrobustError` when nothing is given or a checkpoint is unusable.
    """
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
        out.append(Reconstruction(label, model, model.operator, str(path), "checkpoint", info))
    if methods:
        if out:
            operator = out[0].operator
        elif default_operator is not None:
            operator = default_operator()
        else:
            raise CtrobustError("--method needs an operator: pass a --checkpoint or a geometry")
        for name in methods:
            f = build_method(name, operator)
            if isinstance(f, nn.Module):
                f = move_to(f, device).eval()
            label = name.upper() if name == "fbp" else name
            out.append(Reconstruction(label, f, operator, f"method:{name}", "method", {}))
    labels = [r.label for r in out]
    if len(set(labels)) < len(labels):
        raise CtrobustError(f"two reconstructions share the label(s) {sorted({l for l in labels if labels.count(l) > 1})}; pass each once")
    return out
