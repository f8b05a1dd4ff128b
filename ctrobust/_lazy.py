"""Lazy public names for packages: ``import ctrobust`` stays cheap, heavy modules load on first use."""

from __future__ import annotations

import importlib
from typing import Callable, Iterable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict,
                 submodules: Iterable[str] = ()) -> Callable[[str], object]:
    """A module-level ``__getattr__`` resolving ``exports`` (name -> module) on first access, then caching it.

    ``submodules`` are names of the package's subpackages / modules made reachable as attributes
    (``ctrobust.data.real_ct_slices`` after a bare ``import ctrobust``), imported on first access.
    """
    submodules = frozenset(submodules)

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        if name in submodules:
            value = importlib.import_module(f"{package}.{name}")
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
