"""A duck-typed stand-in for ``deepinv.physics.LinearPhysics`` (deepinv does not import here: its torchvision
wheels are CUDA builds that fail beside the CPU torch). Written from deepinv's documented interface: the
constructor takes ``A``, ``A_adjoint``, ``noise_model``, ``sensor_model``, ``max_iter``, ``tol`` and keyword
options; ``physics(x)`` is ``sensor(noise(A(x)))``; ``A_dagger`` solves least squares iteratively."""

from __future__ import annotations

import types

import torch
from torch import nn


class LinearPhysics(nn.Module):
    def __init__(self, A=lambda x, **kw: x, A_adjoint=None, noise_model=None, sensor_model=lambda x: x, max_iter=50,
                 tol=1e-4, **kwargs):
        super().__init__()
        self.forw, self.A_adj = A, A_adjoint
        self.noise_model = noise_model if noise_model is not None else (lambda y, **kw: y)
        self.sensor_model, self.max_iter, self.tol = sensor_model, max_iter, tol
        self.dagger_calls = 0

    def A(self, x, **kwargs):
        return self.forw(x, **kwargs)

    def A_adjoint(self, y, **kwargs):
        return self.A_adj(y, **kwargs)

    def forward(self, x, **kwargs):
        return self.sensor_model(self.noise_model(self.A(x, **kwargs)))

    def A_dagger(self, y, **kwargs):
        """Conjugate gradients on ``A^T A x = A^T y`` (what deepinv does without a closed form)."""
        self.dagger_calls += 1
        b = self.A_adjoint(y)
        x = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rs = (r * r).sum()
        for _ in range(self.max_iter):
            q = self.A_adjoint(self.A(p))
            alpha = rs / (p * q).sum()
            x, r = x + alpha * p, r - alpha * q
            new = (r * r).sum()
            if new.sqrt() < self.tol * b.norm():
                break
            p, rs = r + new / rs * p, new
        return x


def fake_deepinv_package() -> dict[str, types.ModuleType]:
    """``{"deepinv": ..., "deepinv.physics": ...}`` for ``monkeypatch.setitem(sys.modules, ...)``."""
    package = types.ModuleType("deepinv")
    physics = types.ModuleType("deepinv.physics")
    physics.LinearPhysics = LinearPhysics
    package.physics = physics
    package.__path__ = []  # a package
    return {"deepinv": package, "deepinv.physics": physics}


def real_deepinv_or_skip():
    """deepinv's LinearPhysics, or skip the test with the reason deepinv does not import."""
    import pytest

    from ctrobust.models.deepinv import deepinv_linear_physics

    cls, reason = deepinv_linear_physics()
    if cls is None:
        pytest.skip(f"deepinv does not import here ({reason}); torchvision's wheels from this index are CUDA builds "
                    "that do not load beside the CPU torch")
    return cls


__all__ = ["LinearPhysics", "fake_deepinv_package", "real_deepinv_or_skip"]
