"""Parseval networks (Cisse et al. 2017): keep every weight matrix close to orthonormal.

A weight ``W`` of a convolution or linear layer (any parameter with 2 or more dimensions, e.g. the
``B`` of :class:`~ctrobust.models.LinearReconstruction`) is read as a matrix ``out x rest``
(``W.reshape(W.shape[0], -1)``). After every optimiser step it is retracted towards orthonormality::

    W <- (1 + beta) W - beta W W^T W

which maps each singular value ``s`` to ``(1 + beta) s - beta s^3`` (fixed point 1, contraction
``1 - 2 beta`` near it). For a wide matrix (out <= rest) this drives ``W W^T`` to the identity, for a
tall one ``W^T W``; the transposed form ``W^T <- (1 + beta) W^T - beta W^T W W^T`` is the same map,
so only the order of the products changes, chosen to form the smaller Gram matrix.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["parseval_weights", "retract", "orthogonality_error", "orthogonal_init"]


def parseval_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters the constraint applies to: trainable ones with ``dim >= 2``."""
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad and p.dim() >= 2]


@torch.no_grad()
def retract(module: nn.Module, beta: float = 3e-4) -> None:
    """One Parseval retraction step on every weight matrix of ``module`` (in place)."""
    for _, p in parseval_weights(module):
        w = p.reshape(p.shape[0], -1)
        if w.shape[0] <= w.shape[1]:
            cubic = (w @ w.T) @ w
        else:
            cubic = w @ (w.T @ w)
        p.copy_(((1 + beta) * w - beta * cubic).reshape(p.shape))


@torch.no_grad()
def orthogonality_error(module: nn.Module) -> dict[str, float]:
    """Per weight: ``||G - I||_F / sqrt(k)`` with ``G`` the smaller Gram matrix (``W W^T`` or ``W^T W``, k x k)."""
    out = {}
    for name, p in parseval_weights(module):
        w = p.reshape(p.shape[0], -1).double()
        g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
        out[name] = float((g - eye).norm() / g.shape[0] ** 0.5)
    return out


@torch.no_grad()
def orthogonal_init(module: nn.Module, generator: torch.Generator | None = None, *, keep_zero: bool = True) -> None:
    """Re-initialise every weight matrix with orthonormal rows/columns (``torch.nn.init.orthogonal_``).

    With ``keep_zero`` (default), weights that are exactly zero stay zero: those are deliberately
    zero-initialised residual heads (FBPConvNet starts as FBP); the retraction still applies to them
    after every step.
    """
    for _, p in parseval_weights(module):
        if keep_zero and not torch.any(p):
            continue
        w = torch.empty(p.shape[0], p[0].numel(), dtype=p.dtype)
        torch.nn.init.orthogonal_(w, generator=generator)
        p.copy_(w.reshape(p.shape).to(p.device))
