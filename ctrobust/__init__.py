"""ctrobust: robust deep-learning CT reconstruction.

The public names below are imported lazily, so ``import ctrobust`` is cheap and a missing optional
backend only matters when it is used.

Shapes (everywhere): images ``(B, 1, N, N)``, sinograms ``(B, 1, A, D)`` with A angles and D detector
bins, compressed-sensing measurements ``(B, m)`` and vectorised images ``(B, n)``.
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "ParallelBeam2D": "ctrobust.operators.geometry",
    "FanBeam2D": "ctrobust.operators.geometry",
    "LinearOperator": "ctrobust.operators.base",
    "RadonTransform": "ctrobust.operators.radon",
    "GaussianCS": "ctrobust.operators.cs",
    "PartialDCT": "ctrobust.operators.cs",
    "DCTSubmatrix": "ctrobust.operators.cs",
    "MatrixOperator": "ctrobust.operators.cs",
    "load_checkpoint": "ctrobust.training.checkpoint",
    "CtrobustError": "ctrobust.errors",
}

#: the layers, top to bottom (docs/architecture.md); each is reachable as ``ctrobust.<name>`` on first use
SUBPACKAGES = ("cli", "app", "training", "evaluation", "reconstruction", "models", "attacks", "operators", "data")

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_getattr("ctrobust", _EXPORTS, globals(), SUBPACKAGES)


def __dir__():
    return __all__ + list(SUBPACKAGES)
