"""The residual reconstruction ``f(y) = x0 + U(x0)``, ``x0 = A^+ y`` (or ``A^T y``), for CT and CS alike.

One class serves every operator through the shared operator vocabulary (docs/method.md, "Networks"):
``x0`` is ``operator.pinv(y)`` (filtered backprojection for the Radon transform, the pseudo-inverse for
CS operators) or ``operator.adjoint(y)``, reshaped to ``(B, 1, *operator.image_shape)`` for the U-Net
(2-D images: a 2-D U-Net; 1-D signals: a 1-D U-Net) and back to ``(B, *operator.domain_shape)``.

:class:`~ctrobust.models.fbpconvnet.FBPConvNet` (Jin et al. 2017) and
:class:`~ctrobust.models.cs_net.CSResidualNet` are this class with their historical constructor
signatures and ``to_config()`` types, so their checkpoints keep loading.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ctrobust.models.unet import UNet, _in_dtype_of

__all__ = ["ResidualReconstruction", "INITS"]

#: Initial reconstructions fed to the U-Net.
INITS = ("pinv", "adjoint")


class ResidualReconstruction(nn.Module):
    """``f(y) = x0 + U(x0)``: measurements ``(B, *operator.range_shape)`` -> ``(B, *operator.domain_shape)``.

    Parameters
    ----------
    operator : LinearOperator
        The forward operator, held as the submodule ``.operator`` (``.to()`` moves the buffers of CS
        operators; operators keep no persistent state, so ``state_dict()`` holds only the U-Net).
    channels, depth : int
        U-Net width of the first level and number of poolings.
    init : {"pinv", "adjoint"}
        ``x0 = operator.pinv(y)`` or ``operator.adjoint(y)``.
    norm : {"batch", "group", "none"}
        U-Net normalisation.
    seed : int, optional
        Seed of the initial weights (the global RNG is left untouched). The U-Net's last layer starts
        at zero, so an untrained network is exactly ``x0``.
    filter : str, optional
        Passed as ``operator.pinv(y, filter=...)`` (the FBP filter of the Radon transform); ``None``
        uses the operator's default inverse.
    """

    def __init__(self, operator, channels: int = 64, depth: int = 4, init: str = "pinv", *, norm: str = "batch",
                 seed: int | None = None, filter: str | None = None):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if init == "pinv" and not operator.has_pinv:
            raise TypeError(f"init='pinv' needs operator.pinv(), which {type(operator).__name__} lacks")
        n = math.prod(operator.domain_shape)
        shape = tuple(int(s) for s in operator.image_shape)
        if math.prod(shape) != n or len(shape) not in (1, 2):
            raise ValueError(f"operator.image_shape {shape} must be 1-D or 2-D with {n} entries")
        self.operator = operator
        self.init = init
        self.filter = filter
        self.image_shape = shape
        self.unet = UNet(1, 1, channels, depth, norm=norm, dims=len(shape), seed=seed, zero_head=True)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        """``operator.range_shape``: ``(1, A, D)`` for CT, ``(m,)`` for CS."""
        return tuple(self.operator.range_shape)

    def to_config(self) -> dict:
        """JSON-able arguments; ``build_model(config, operator)`` rebuilds the network."""
        return {"type": "ResidualReconstruction", "channels": self.unet.channels, "depth": self.unet.depth,
                "init": self.init, "norm": self.unet.norm, "filter": self.filter}

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        """``x0``: ``(B, *range_shape) -> (B, *domain_shape)``."""
        if self.init == "adjoint":
            return self.operator.adjoint(y)
        return self.operator.pinv(y) if self.filter is None else self.operator.pinv(y, filter=self.filter)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Reconstruct a batch (in the network's dtype; a float64 ``y`` into a float32 network is converted,
        differentiably)."""
        x0 = self.initial(_in_dtype_of(self.unet, y))
        img = x0.reshape(x0.shape[0], 1, *self.image_shape)
        return (img + self.unet(img)).reshape(x0.shape)
