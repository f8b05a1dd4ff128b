"""Reconstruction networks and the auxiliary adversary.

Shapes: sinograms ``(B, 1, A, D)``, images ``(B, 1, N, N)``, CS measurements ``(B, m)``, vectorised
images ``(B, n)``. Every model has ``config() -> dict`` (JSON-able) and ``build_model(config, operator)``
rebuilds it (weights come from a state dict). Models import no training code.
"""

from __future__ import annotations

from ctrobust.models.adversary import Adversary
from ctrobust.models.cs_net import CSResidualNet
from ctrobust.models.fbpconvnet import FBPConvNet
from ctrobust.models.linear import LinearReconstruction
from ctrobust.models.residual import ResidualReconstruction
from ctrobust.models.unet import UNet, seeded
from ctrobust.models.unrolled import LearnedPrimalDual
from ctrobust.models.deepinv import DeepinvReconstructor, as_physics
from ctrobust.attacks.ball import eps_radius, project_l2_ball

__all__ = ["UNet", "ResidualReconstruction", "FBPConvNet", "CSResidualNet", "LinearReconstruction", "Adversary", "eps_radius",
           "project_l2_ball", "build_model", "seeded", "LearnedPrimalDual",
           "DeepinvReconstructor", "as_physics"]


def build_model(config: dict, operator=None, *, seed: int | None = None):
    """Rebuild a model from its ``config()``; ``operator`` is needed by the residual networks.

    Raises ``ValueError`` for an unknown ``type`` or a missing operator.
    """
    import torch

    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind == "UNet":
        return UNet(**cfg, seed=seed)
    if kind == "LinearReconstruction":
        dtype = getattr(torch, cfg.pop("dtype", "float32"))
        return LinearReconstruction(cfg["m"], cfg["n"], dtype=dtype)
    if kind == "Adversary":
        shape = cfg.pop("measurement_shape")
        return Adversary(shape, **cfg, seed=seed)
    if kind in ("ResidualReconstruction", "FBPConvNet", "CSResidualNet"):
        if operator is None:
            raise ValueError(f"rebuilding {kind} needs its operator")
        cls = {"ResidualReconstruction": ResidualReconstruction, "FBPConvNet": FBPConvNet,
               "CSResidualNet": CSResidualNet}[kind]
        return cls(operator, **cfg, seed=seed)
    if kind == "lpd":
        if operator is None:
            raise ValueError("rebuilding lpd (LearnedPrimalDual) needs its operator")
        return LearnedPrimalDual(operator, **cfg, seed=seed)
    raise ValueError(f"unknown model type {kind!r} in model config {config!r}")
