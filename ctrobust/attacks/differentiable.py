"""One forward and backward pass that tells whether a reconstruction can be attacked or trained.

The measurement-space attack and the adversarial training objectives follow ``d f(y) / d y``; training
follows ``d loss / d theta``. A reconstruction computed outside autograd (an iterative solver run under
``torch.no_grad()`` or through NumPy, a model whose ``forward`` detaches its output) breaks both, and torch
then says only "element 0 of tensors does not require grad and does not have a grad_fn", deep inside the
attack. :func:`check_differentiable` runs the probe up front and raises :class:`NotDifferentiableError`
with what is wrong and what to do.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from ctrobust.attacks.measurement import eval_mode
from ctrobust.errors import CtrobustError

__all__ = ["NotDifferentiableError", "check_differentiable"]

_FIX = ("compute f with torch operations and keep them in the autograd graph: no torch.no_grad() or .detach() "
        "in its forward, no round trip through NumPy; an iterative solver must be unrolled (its iterations "
        "differentiated through, as ctrobust's tv and dip methods are)")


class NotDifferentiableError(CtrobustError):
    """A reconstruction through which autograd cannot differentiate (what an attack or training needs)."""


def check_differentiable(f: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, *, label: str = "f",
                         wrt_input: bool = True, parameters: Iterable[torch.Tensor] | None = None,
                         purpose: str = "the attack") -> None:
    """Raise :class:`NotDifferentiableError` unless ``f(y)`` is differentiable by autograd.

    One forward and one backward pass of ``f`` on ``y`` (a small batch, e.g. one sample; ``nn.Module`` s in
    eval mode, their own modes restored), under ``torch.enable_grad()``.

    Parameters
    ----------
    f : callable
        The reconstruction, measurements -> images.
    y : Tensor
        Measurements ``f`` accepts, e.g. ``(1, 1, A, D)``; not modified.
    label : str
        The name the message gives ``f``.
    wrt_input : bool
        Require a gradient with respect to ``y`` (the attack, adversarial training).
    parameters : iterable of Tensor, optional
        Trainable parameters of which at least one must receive a gradient (training).
    purpose : str
        What needs the gradient, for the message ("the attack", "training").
    """
    probe = y.detach().clone().requires_grad_(wrt_input)
    params = [p for p in (parameters or ()) if p.requires_grad]
    with torch.enable_grad(), eval_mode(f):
        out = f(probe)
        if not isinstance(out, torch.Tensor):
            raise NotDifferentiableError(f"{label} returned a {type(out).__name__}, not a tensor: {purpose} needs "
                                         "a torch reconstruction")
        if not out.requires_grad:
            raise NotDifferentiableError(
                f"{label} is not differentiable: its output carries no gradient (it was computed under torch.no_grad(), "
                f"detached, or outside torch), and {purpose} differentiates through it. To fix: {_FIX}")
        inputs = ([probe] if wrt_input else []) + params
        if not inputs:
            return
        grads = torch.autograd.grad(out.float().square().sum(), inputs, allow_unused=True)
    if wrt_input and grads[0] is None:
        raise NotDifferentiableError(
            f"{label} is not differentiable with respect to its measurement y: its output does not depend on y "
            f"through autograd (the measurement was detached or taken outside torch), and {purpose} follows "
            f"d f(y) / d y. To fix: {_FIX}")
    if params and all(g is None for g in grads[int(wrt_input):]):
        raise NotDifferentiableError(
            f"none of {label}'s trainable parameters receives a gradient, so {purpose} cannot change them. "
            f"To fix: {_FIX}")
