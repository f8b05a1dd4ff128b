"""Reconstruction network for compressed sensing: the residual U-Net on ``x0 = A^T y`` (or ``A^+ y``).

:class:`CSResidualNet` is :class:`~ctrobust.models.residual.ResidualReconstruction` on a vector
operator ``(n,) -> (m,)``, with its historical constructor (``init="adjoint"`` by default).
"""

from __future__ import annotations

from ctrobust.models.residual import INITS, ResidualReconstruction

__all__ = ["CSResidualNet", "INITS"]


class CSResidualNet(ResidualReconstruction):
    """``f(y) = x0 + U(x0)`` for CS measurements: ``(B, m) -> (B, n)``.

    ``x0`` is ``A^T y`` (``init="adjoint"``) or ``A^+ y`` (``init="pinv"``), reshaped to
    ``(B, 1, *operator.image_shape)`` (row-major) for the U-Net and flattened back to ``(B, n)``. A
    one-dimensional ``image_shape`` uses a 1-D U-Net.

    Parameters
    ----------
    operator : LinearOperator
        CS operator with ``domain_shape=(n,)``, ``range_shape=(m,)`` and ``image_shape``. Kept as ``.operator``.
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
        if len(operator.domain_shape) != 1 or len(operator.range_shape) != 1:
            raise ValueError(f"CSResidualNet needs a vector operator (n,) -> (m,), got "
                             f"{operator.domain_shape} -> {operator.range_shape}")
        super().__init__(operator, channels, depth, init, norm=norm, seed=seed)

    def to_config(self) -> dict:
        """JSON-able arguments; ``build_model(config, operator)`` rebuilds the network."""
        return {"type": "CSResidualNet", "channels": self.unet.channels, "depth": self.unet.depth,
                "init": self.init, "norm": self.unet.norm}
