"""FBPConvNet (Jin et al. 2017): ``f(y) = x0 + U(x0)`` with ``x0 = FBP(y)``.

FBP is a differentiable layer of the operator, so gradients of any loss reach the sinogram ``y``:
attacks and the adversary act in sinogram space.
"""

from __future__ import annotations

import torch
from torch import nn

from ctrobust.models.unet import UNet, _in_dtype_of

__all__ = ["FBPConvNet"]


class FBPConvNet(nn.Module):
    """Residual U-Net after filtered back-projection: sinograms ``(B, 1, A, D)`` -> images ``(B, 1, N, N)``.

    Parameters
    ----------
    operator : RadonTransform
        The forward operator; must provide ``fbp(y, filter=...) -> (B, 1, N, N)``. Kept as ``.operator``.
    channels, depth : int
        U-Net width of the first level and number of poolings (Jin et al.: 64 and 4).
    filter : str
        FBP filter name passed to ``operator.fbp`` ("ram-lak", "shepp-logan", "cosine", "hann").
    norm : {"batch", "group", "none"}
        U-Net normalisation (Jin et al.: batch norm).
    seed : int, optional
        Seed of the initial weights (the global RNG is left untouched). The U-Net's last layer starts
        at zero, so an untrained FBPConvNet is exactly FBP.
    """

    def __init__(self, operator, channels: int = 64, depth: int = 4, filter: str = "ram-lak", *,
                 norm: str = "batch", seed: int | None = None):
        super().__init__()
        if not hasattr(operator, "fbp"):
            raise TypeError(f"FBPConvNet needs an operator with an fbp() method (a RadonTransform), got {type(operator).__name__}")
        # Not registered as a submodule: the operator holds no trainable state, stays out of
        # state_dict() and of .to()/DDP (it serves any device its input is on).
        object.__setattr__(self, "operator", operator)
        self.filter = filter
        self.unet = UNet(1, 1, channels, depth, norm=norm, seed=seed, zero_head=True)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        """``(1, A, D)``."""
        return tuple(self.operator.range_shape)

    def config(self) -> dict:
        """JSON-able arguments; ``build_model(config, operator)`` rebuilds the network."""
        return {"type": "FBPConvNet", "channels": self.unet.channels, "depth": self.unet.depth,
                "filter": self.filter, "norm": self.unet.norm}

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        """``x0 = FBP(y)``, ``(B, 1, A, D) -> (B, 1, N, N)``."""
        return self.operator.fbp(y, filter=self.filter)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``(B, 1, A, D)`` sinograms to ``(B, 1, N, N)`` images (in the network's dtype;
        a float64 ``y`` into a float32 network is converted, differentiably)."""
        x0 = self.initial(_in_dtype_of(self.unet, y))
        return x0 + self.unet(x0)
