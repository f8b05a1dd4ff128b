"""Reconstruction network for compressed sensing: the residual U-Net on ``x0 = A^T y`` (or ``A^+ y``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ctrobust.models.unet import UNet, _in_dtype_of

__all__ = ["CSResidualNet"]

INITS = ("adjoint", "pinv")


class CSResidualNet(nn.Module):
    """``f(y) = x0 + U(x0)`` for CS measurements: ``(B, m) -> (B, n)``.

    ``x0`` is ``A^T y`` (``init="adjoint"``) or ``A^+ y`` (``init="pinv"``, needs ``operator.pinv``),
    reshaped to ``(B, 1, *operator.image_shape)`` (row-major) for the U-Net and flattened back to
    ``(B, n)``. A one-dimensional ``image_shape`` uses a 1-D U-Net.

    Parameters
    ----------
    operator : LinearOperator
        CS operator with ``domain_shape=(n,)``, ``range_shape=(m,)`` and ``image_shape``
        (defaults to ``(n,)`` when missing). Kept as ``.operator``.
    channels, depth : int
        U-Net width and number of poolings.
    init : {"adjoint", "pinv"}
        Which initial reconstruction feeds the U-Net.
    norm : {"batch", "group", "none"}
        U-Net normalisation.
    seed : int, optional
        Seed of the initial weights (the global RNG is left untouched).
    """

    def __init__(self, operator, channels: int = 32, depth: int = 2, init: str = "adjoint", *,
                 norm: str = "batch", seed: int | None = None):
        super().__init__()
        if len(operator.domain_shape) != 1 or len(operator.range_shape) != 1:
            raise ValueError(f"CSResidualNet needs a vector operator (n,) -> (m,), got "
                             f"{operator.domain_shape} -> {operator.range_shape}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if init == "pinv" and not hasattr(operator, "pinv"):
            raise TypeError(f"init='pinv' needs operator.pinv(), which {type(operator).__name__} lacks")
        n = operator.domain_shape[0]
        shape = tuple(int(s) for s in getattr(operator, "image_shape", None) or (n,))
        if math.prod(shape) != n or len(shape) not in (1, 2):
            raise ValueError(f"operator.image_shape {shape} must be 1-D or 2-D with {n} entries")
        self.operator = operator
        self.init = init
        self.image_shape = shape
        self.unet = UNet(1, 1, channels, depth, norm=norm, dims=len(shape), seed=seed, zero_head=True)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        """``(m,)``."""
        return tuple(self.operator.range_shape)

    def config(self) -> dict:
        """JSON-able arguments; ``build_model(config, operator)`` rebuilds the network."""
        return {"type": "CSResidualNet", "channels": self.unet.channels, "depth": self.unet.depth,
                "init": self.init, "norm": self.unet.norm}

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        """``x0``: ``(B, m) -> (B, n)``."""
        return self.operator.adjoint(y) if self.init == "adjoint" else self.operator.pinv(y)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``(B, m)`` measurements to ``(B, n)`` vectorised images (in the network's dtype)."""
        x0 = self.initial(_in_dtype_of(self.unet, y))
        img = x0.reshape(x0.shape[0], 1, *self.image_shape)
        return (img + self.unet(img)).reshape(x0.shape[0], -1)
