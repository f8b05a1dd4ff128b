"""The operator layer: one :class:`LinearOperator` contract for the Radon transform and CS operators."""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

_EXPORTS = {
    "LinearOperator": "ctrobust.operators.base",
    "ComposedOperator": "ctrobust.operators.base",
    "AdjointOperator": "ctrobust.operators.base",
    "RadonTransform": "ctrobust.operators.radon",
    "FanBackprojection": "ctrobust.operators.fanbeam",
    "GaussianCS": "ctrobust.operators.cs",
    "PartialDCT": "ctrobust.operators.cs",
    "DCTSubmatrix": "ctrobust.operators.cs",
    "MatrixOperator": "ctrobust.operators.cs",
    **dict.fromkeys(("NoiseModel", "GaussianNoise", "LogPoissonNoise", "NoiseChain", "measure", "apply_noise",
                     "make_noise", "noise_from_config"), "ctrobust.operators.noise"),
}

__all__ = sorted(_EXPORTS)


#: modules reachable as attributes on first use
SUBMODULES = ('astra_backend', 'base', 'cs', 'fanbeam', 'filters', 'geometry', 'mismatch', 'noise', 'odl_backend', 'radon', 'sparse')
__getattr__ = lazy_getattr("ctrobust.operators", _EXPORTS, globals(), SUBMODULES)
