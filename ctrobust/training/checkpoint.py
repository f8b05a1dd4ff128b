"""Checkpoints: everything needed to rebuild a trained model and to resume its training.

A checkpoint is a ``torch.save`` file holding only tensors and primitive containers (dict, list,
str, int, float, bool, None) -- no pickled classes -- so it loads with ``torch.load(weights_only=True)``.
It is written atomically (temporary file beside it + ``os.replace``). Keys:

``format``, ``version``     ``"ctrobust-checkpoint"``, 1
``model``                   ``{"config": description, "factory": "module:factory", "state": state_dict}``
                            (operator excluded): the description ``{"type": name_or_path, **options}`` is the
                            model's ``to_config()`` or the one ``build_model`` recorded; ``factory`` is the
                            import path of the function or class that rebuilds it as
                            ``factory(operator, **options)`` (absent in checkpoints of version 1.0)
``operator``                the operator's ``to_config()`` (``RadonTransform``: geometry, backend,
                            projector; CS operators: sizes and seeds) plus ``rebuildable``
``geometry``                the geometry's ``to_config()`` for CT, else ``None``
``objective``               ``{"config": objective.to_config(), "state": objective.state_dict()}``
``optimizer``, ``scheduler``  state dicts
``rng``                     global torch / numpy / python RNG states at the save
``step``, ``epoch``, ``batch_in_epoch``  progress (optimiser steps done; epoch and batch position)
``data``                    fingerprint of the training data
``metrics``, ``best``       last validation metrics; best step and its validation MSE
``run``                     trainer settings (batch size, lr, world size, ...) and ``train_config``
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from ctrobust import __version__
from ctrobust.errors import CtrobustError
from ctrobust.files import atomic_write

__all__ = ["save_checkpoint", "save_model", "model_payload", "read_checkpoint", "load_checkpoint", "operator_config", "build_operator", "check_operator",
           "model_state", "rng_state", "set_rng_state", "FORMAT", "VERSION"]

FORMAT = "ctrobust-checkpoint"
VERSION = 1


# -- operators ----------------------------------------------------------------------------------------
def operator_config(operator) -> dict:
    """A JSON-able description of ``operator`` (its ``to_config()``) that :func:`build_operator` turns back into it.

    Operators that cannot be rebuilt (custom ones without ``to_config``) get
    ``{"type": name, "rebuildable": False, "domain_shape": ..., "range_shape": ...}``; their checkpoints
    load only with ``load_checkpoint(path, operator=...)``.
    """
    try:
        cfg = dict(operator.to_config())
    except (AttributeError, NotImplementedError):
        return {"type": type(operator).__name__, "rebuildable": False,
                "domain_shape": list(operator.domain_shape), "range_shape": list(operator.range_shape)}
    cfg.setdefault("rebuildable", True)
    return cfg


def build_operator(config: dict):
    """Rebuild an operator from :func:`operator_config` output (raises :class:`CtrobustError`)."""
    from ctrobust.operators.base import operator_from_config

    cfg = {k: v for k, v in config.items() if k != "rebuildable"}
    kind = cfg.get("type")
    if not config.get("rebuildable", True):
        raise CtrobustError(f"the checkpoint's operator ({kind}) is a custom operator that cannot be rebuilt; "
                            "pass it explicitly: load_checkpoint(path, operator=...)")
    try:
        return operator_from_config(cfg)
    except Exception as exc:
        raise CtrobustError(f"cannot rebuild the checkpoint's operator {config!r}: {exc}") from exc


# -- state ---------------------------------------------------------------------------------------------
def model_state(model: torch.nn.Module) -> dict:
    """``model.state_dict()`` without the operator's entries (operators are rebuilt from their config)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("operator.")}


def rng_state() -> dict:
    """Global torch (and CUDA), numpy and python RNG states as tensors and primitives."""
    np_state = np.random.get_state()
    py = random.getstate()
    out = {
        "torch": torch.random.get_rng_state(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py[0]), "state": [int(v) for v in py[1]], "gauss_next": py[2]},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    """Restore the global RNG states saved by :func:`rng_state`."""
    torch.random.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- files ---------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (with ``format``/``version`` added) atomically to ``path``.

    Through :func:`ctrobust.files.atomic_write`: the temporary file ``.NAME.PID.XXXXXXXX.tmp`` is removed
    on any exception (Ctrl-C, and SIGTERM under the command line); those of killed (SIGKILL) writers are
    removed by the next save to ``path``.
    """
    data = {"format": FORMAT, "version": VERSION, "ctrobust_version": __version__, **payload}
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def model_payload(model: torch.nn.Module, operator) -> dict:
    """The part of a checkpoint that rebuilds a model: ``model`` (description, factory path, state), ``operator``,
    ``geometry``. Raises :class:`CtrobustError` for a model that cannot be rebuilt (see
    :func:`ctrobust.models.registry.check_checkpointable`)."""
    from ctrobust.models.registry import check_checkpointable, model_config, model_factory_path

    check_checkpointable(model)
    geometry = getattr(operator, "geometry", None)  # ParallelBeam2D of a RadonTransform; CS operators have none
    return {"model": {"config": model_config(model), "factory": model_factory_path(model), "state": model_state(model)},
            "operator": operator_config(operator),
            "geometry": geometry.to_config() if geometry is not None else None}


def save_model(path: str | os.PathLike, model: torch.nn.Module, operator=None, **extra) -> Path:
    """A checkpoint holding a trained model only (no optimiser or RNG state), readable by :func:`load_checkpoint`.

    ``operator`` defaults to ``model.operator``; ``extra`` entries (JSON-able values, tensors) are stored beside it,
    e.g. ``objective={"config": objective.to_config()}``.
    """
    op = operator if operator is not None else model.operator
    return save_checkpoint(path, {**model_payload(model, op), **extra})


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Everything a checkpoint stores, as a dict (see the module docstring); loaded with ``weights_only=True``.

    Raises :class:`CtrobustError` for a missing, unreadable, truncated or foreign file.
    """
    path = Path(path)
    if not path.exists():
        raise CtrobustError(f"checkpoint not found: {path}")
    if path.is_dir():
        hint = " (did you mean last.pt or best.pt inside it?)" if (path / "last.pt").exists() else ""
        raise CtrobustError(f"checkpoint path is a directory: {path}{hint}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many kinds (UnpicklingError, RuntimeError, IndexError, ...)
        raise CtrobustError(_load_error(path, exc)) from None

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CtrobustError(f"{path} is not a ctrobust checkpoint (no '{FORMAT}' marker)")
    if int(data.get("version", 0)) > VERSION:
        raise CtrobustError(f"{path} was written by a newer ctrobust (checkpoint format {data['version']}, "
                            f"this version reads up to {VERSION}); upgrade ctrobust")
    for key in ("model", "operator"):
        if key not in data:
            raise CtrobustError(f"checkpoint {path} is incomplete: no '{key}' entry")
    return data


def _load_error(path: Path, exc: Exception) -> str:
    """The message for a file ``torch.load(weights_only=True)`` refused; never suggests an unrestricted load."""
    text = str(exc)
    if "weights only" in text.lower() or "weights_only" in text or "WeightsUnpickler" in text:
        found = re.search(r"GLOBAL\s+([\w.]+)", text)
        if found:  # a pickled class or function: what attacks and foreign files hold
            return (f"refused to load checkpoint {path}: it contains disallowed objects (a reference to "
                    f"{found.group(1)}); a ctrobust checkpoint holds only tensors and plain values, so this file "
                    "was not written by ctrobust or was altered. It is not loaded")
        found = re.search(r"Unsupported operand\s*\d+", text)
        detail = f": {found.group(0)}" if found else ""
        return (f"cannot read checkpoint {path}: it is corrupt, truncated or not a ctrobust checkpoint "
                f"(content that is not plain tensors and values{detail}). It is not loaded")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (f"cannot read checkpoint {path}: it is corrupt, truncated or not a ctrobust checkpoint "
            f"({type(exc).__name__}: {first[:200]})")


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _operator_shapes(config: dict):
    """(domain_shape, range_shape) a stored operator description implies, or None when unknown."""
    from ctrobust.operators.base import OPERATOR_TYPES, operator_class

    if "domain_shape" in config and "range_shape" in config:
        return tuple(config["domain_shape"]), tuple(config["range_shape"])
    if config.get("type") in OPERATOR_TYPES:
        return operator_class(config["type"]).shapes_from_config(config)
    return None


def check_operator(path, stored: dict, operator) -> None:
    """Refuse an ``operator`` that differs from the checkpoint's stored description ``stored``.

    Same operator type: every described setting (geometry, sizes, seeds, ...) must agree; only the
    backend and the ASTRA projector may differ (they compute the same operator). Another type (a custom
    operator standing in for the stored one): its domain and range shapes must match the stored ones.
    Raises :class:`CtrobustError` naming each difference.
    """
    ignore = ("backend", "projector", "rebuildable")
    given = operator_config(operator)
    a = {k: v for k, v in stored.items() if k not in ignore}
    b = {k: v for k, v in given.items() if k not in ignore}
    problems = []
    if a.get("type") == b.get("type"):
        problems = [f"{k} {_short(b.get(k))} (checkpoint: {_short(a.get(k))})"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    shapes = _operator_shapes(stored)
    if shapes is not None:
        for key, want in zip(("domain_shape", "range_shape"), shapes):
            have = tuple(getattr(operator, key))
            if have != tuple(want):
                problems.append(f"{key} {have} (checkpoint: {tuple(want)})")
    if problems:
        raise CtrobustError(f"the operator passed to load_checkpoint does not match checkpoint {path}: "
                            + "; ".join(problems) + ". Pass the operator the model was trained with, or omit "
                            "operator= to rebuild it from the checkpoint")


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *, operator=None):
    """The trained model of a checkpoint, in eval mode, with its operator as ``.operator``.

    Parameters
    ----------
    path : path-like
        A ``last.pt`` / ``best.pt`` written by the trainer.
    map_location : str or torch.device
        Where the weights go (``"cpu"`` default).
    operator : LinearOperator, optional
        Use this operator instead of rebuilding it from the stored description (needed for custom
        operators). It must be the same operator: same type and settings (geometry, sizes, seeds; only
        the backend and ASTRA projector may differ), or, for another type, the same domain and range
        shapes (:func:`check_operator`); otherwise :class:`CtrobustError`.

    Returns
    -------
    torch.nn.Module
        E.g. an :class:`~ctrobust.models.FBPConvNet` mapping sinograms ``(B, 1, A, D)`` to images
        ``(B, 1, N, N)``; for CT, ``model.operator`` is its :class:`~ctrobust.operators.radon.RadonTransform`.
    """
    return _model_from_record(Path(path), read_checkpoint(path, map_location="cpu"), map_location, operator)


def _model_from_record(path: Path, data: dict, map_location="cpu", operator=None):
    """The model a checkpoint record ``data`` (read from ``path``) describes, weights loaded, in eval mode."""
    from ctrobust.models.registry import build_model

    op = operator if operator is not None else build_operator(data["operator"])
    if operator is not None:
        check_operator(path, data["operator"], operator)
    try:  # seeded: the global RNG stays untouched; a factory's module is imported, nothing else is run
        model = build_model(data["model"]["config"], op, seed=0, factory=data["model"].get("factory"))
    except CtrobustError as exc:
        raise CtrobustError(f"checkpoint {path}: cannot rebuild its model: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise CtrobustError(f"checkpoint {path} holds a model this ctrobust cannot build: {exc}") from exc
    try:
        missing, unexpected = model.load_state_dict(data["model"]["state"], strict=False)
    except RuntimeError as exc:
        raise CtrobustError(f"checkpoint {path} does not fit its model config (shape mismatch): "
                            f"{str(exc).splitlines()[0]}") from exc
    missing = [k for k in missing if not k.startswith("operator.")]
    if missing or unexpected:
        raise CtrobustError(f"checkpoint {path} does not fit its model config: missing {missing[:5]}, "
                            f"unexpected {list(unexpected)[:5]}")
    if getattr(model, "operator", None) is not op:  # models built without an operator (e.g. LinearReconstruction)
        if isinstance(op, torch.nn.Module) and any(True for _ in op.buffers()):
            model.operator = op  # registered: .to() moves its buffers
        else:
            object.__setattr__(model, "operator", op)
    model.to(map_location)
    model.eval()
    return model


def load_model(path: str | os.PathLike, map_location="cpu"):
    """``(model, record)``: a checkpoint's model (eval mode, with ``.operator``) and everything it stores.

    The file is read once. Raises :class:`CtrobustError` with a clear message when the file is missing,
    not a checkpoint, or cannot be rebuilt.
    """
    path = Path(path)
    if not path.exists():
        raise CtrobustError(f"checkpoint {str(path)!r} does not exist; pass the best.pt (or last.pt) written by 'ctrobust train'")
    if path.is_dir():
        raise CtrobustError(f"checkpoint {str(path)!r} is a directory; pass the .pt file inside it (e.g. {path / 'best.pt'})")
    record = read_checkpoint(path)
    try:
        model = _model_from_record(path, record, map_location)
    except CtrobustError:
        raise
    except Exception as exc:  # corrupt or foreign content behind a valid marker
        raise CtrobustError(f"checkpoint {str(path)!r} is not a readable ctrobust checkpoint ({type(exc).__name__}: {exc})") from exc
    if not hasattr(model, "operator"):
        raise CtrobustError(f"checkpoint {str(path)!r} holds a model without an operator; cannot form measurements")
    return model, record

