"""The operator layer: one :class:`LinearOperator` contract for the Radon transform and CS operators."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LinearOperator": "ctrobust.operators.base",
    "ComposedOperator": "ctrobust.operators.base",
    "AdjointOperator": "ctrobust.operators.base",
    "RadonTransform": "ctrobust.operators.radon",
    "GaussianCS": "ctrobust.operators.cs",
    "PartialDCT": "ctrobust.operators.cs",
    "DCTSubmatrix": "ctrobust.operators.cs",
    "MatrixOperator": "ctrobust.operators.cs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctrobust.operators' has no attribute {name!r}")
