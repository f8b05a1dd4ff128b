"""Reconstruction networks and the auxiliary adversary.

Shapes: sinograms ``(B, 1, A, D)``, images ``(B, 1, N, N)``, CS measurements ``(B, m)``, vectorised
images ``(B, n)``. Every network describes itself with ``to_config() -> dict`` (JSON-able, ``{"type": name,
**options}``) and ``build_model(config, operator)`` rebuilds it (weights come from a state dict). A model is
named by a registry name (``fbpconvnet``, ``lpd``, ...) or by the import path ``"package.module:factory"``
of a user's ``factory(operator, **options) -> nn.Module`` (:mod:`ctrobust.models.registry`,
docs/models.md). Models import no training code. Names are imported lazily.
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

__all__ = ["UNet", "ResidualReconstruction", "FBPConvNet", "CSResidualNet", "LinearReconstruction", "Adversary",
           "eps_radius", "project_l2_ball", "build_model", "register_model", "model_config", "model_names",
           "seeded", "LearnedPrimalDual", "DeepinvReconstructor", "as_physics"]

_EXPORTS = {
    "UNet": "ctrobust.models.unet",
    "seeded": "ctrobust.models.unet",
    "ResidualReconstruction": "ctrobust.models.residual",
    "FBPConvNet": "ctrobust.models.fbpconvnet",
    "CSResidualNet": "ctrobust.models.cs_net",
    "LinearReconstruction": "ctrobust.models.linear",
    "Adversary": "ctrobust.models.adversary",
    "eps_radius": "ctrobust.attacks.ball",
    "project_l2_ball": "ctrobust.attacks.ball",
    "build_model": "ctrobust.models.registry",
    "register_model": "ctrobust.models.registry",
    "model_config": "ctrobust.models.registry",
    "model_names": "ctrobust.models.registry",
    "LearnedPrimalDual": "ctrobust.models.unrolled",
    "DeepinvReconstructor": "ctrobust.models.deepinv",
    "as_physics": "ctrobust.models.deepinv",
}
SUBMODULES = ("adversary", "cs_net", "deepinv", "fbpconvnet", "linear", "registry", "residual", "unet", "unrolled")

__getattr__ = lazy_getattr("ctrobust.models", _EXPORTS, globals(), SUBMODULES)


def __dir__():
    return sorted(set(__all__) | set(globals()))
