"""A linear reconstruction ``f(y) = B y`` for the theory of the linear min-max problem."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearReconstruction"]


class LinearReconstruction(nn.Module):
    """``f(y) = B y`` on batches: ``(B, m) -> (B, n)`` computed as ``y @ B^T``.

    Parameters
    ----------
    m, n : int
        Measurement and signal dimensions; ``.B`` is an ``(n, m)`` parameter.
    init : torch.Tensor, optional
        Initial ``(n, m)`` matrix (copied); default zeros (the min-max problem in ``B`` is convex,
        so the start does not matter for the optimum).
    dtype : torch.dtype
        Parameter dtype (float32 default; float64 for precise theory checks).
    """

    #: linear in the measurements: its worst case is exact (:mod:`ctrobust.attacks.worst_case`)
    is_linear = True

    def __init__(self, m: int, n: int, *, init: torch.Tensor | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        for name, v in (("m", m), ("n", n)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.m, self.n = m, n
        if init is None:
            weight = torch.zeros(n, m, dtype=dtype)
        else:
            if tuple(init.shape) != (n, m):
                raise ValueError(f"init must have shape (n, m) = {(n, m)}, got {tuple(init.shape)}")
            weight = init.detach().clone().to(dtype)
        self.B = nn.Parameter(weight)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        return (self.m,)

    def to_config(self) -> dict:
        """JSON-able arguments; ``build_model(config)`` rebuilds it (weights come from the state dict)."""
        return {"type": "LinearReconstruction", "m": self.m, "n": self.n,
                "dtype": str(self.B.dtype).replace("torch.", "")}

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, m) -> (B, n)``."""
        if y.dim() != 2 or y.shape[1] != self.m:
            raise ValueError(f"LinearReconstruction expects (B, {self.m}), got {tuple(y.shape)}")
        return y.to(self.B.dtype) @ self.B.T
