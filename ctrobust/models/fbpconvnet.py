"""FBPConvNet (Jin et al. 2017): ``f(y) = x0 + U(x0)`` with ``x0 = FBP(y)``.

FBP is a differentiable layer of the operator, so gradients of any loss reach the sinogram ``y``:
attacks and the adversary act in sinogram space. The network is
:class:`~ctrobust.models.residual.ResidualReconstruction` with ``init="pinv"`` (FBP is the Radon
transform's ``pinv``), under its published name and constructor.
"""

from __future__ import annotations

from ctrobust.models.residual import ResidualReconstruction

__all__ = ["FBPConvNet"]


class FBPConvNet(ResidualReconstruction):
    """Residual U-Net after filtered back-projection: sinograms ``(B, 1, A, D)`` -> images ``(B, 1, N, N)``.

    Parameters
    ----------
    operator : RadonTransform
        The forward operator; ``operator.pinv(y, filter=...)`` is its FBP. Kept as ``.operator``.
    channels, depth : int
        U-Net width of the first level and number of poolings (Jin et al.: 64 and 4).
    filter : str
        FBP filter name ("ram-lak", "shepp-logan", "cosine", "hamming", "hann").
    norm : {"batch", "group", "none"}
        U-Net normalisation (Jin et al.: batch norm).
    seed : int, optional
        Seed of the initial weights (the global RNG is left untouched). The U-Net's last layer starts
        at zero, so an untrained FBPConvNet is exactly FBP.
    """

    def __init__(self, operator, channels: int = 64, depth: int = 4, filter: str = "ram-lak", *,
                 norm: str = "batch", seed: int | None = None):
        from ctrobust.operators.radon import RadonTransform

        if not isinstance(operator, RadonTransform):
            raise TypeError(f"FBPConvNet needs a RadonTransform (its pinv is FBP with a filter), got "
                            f"{type(operator).__name__}; use ResidualReconstruction for other operators")
        super().__init__(operator, channels, depth, "pinv", norm=norm, seed=seed, filter=filter)

    def to_config(self) -> dict:
        """JSON-able arguments; ``build_model(config, operator)`` rebuilds the network."""
        return {"type": "FBPConvNet", "channels": self.unet.channels, "depth": self.unet.depth,
                "filter": self.filter, "norm": self.unet.norm}
