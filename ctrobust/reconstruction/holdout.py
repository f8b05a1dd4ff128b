"""Held-out measurement bins: the self-validation set of methods that fit a single measurement.

The deep image prior (:mod:`ctrobust.reconstruction.classical`) and test-time training (:mod:`ctrobust.reconstruction.ttt`) fit a
network to one measurement ``y``; a random set of bins is kept out of the fit and its error decides
when to stop (docs/method.md section 6).
"""

from __future__ import annotations

import math

import torch

__all__ = ["holdout_mask"]


def holdout_mask(shape, fraction: float, generator: torch.Generator, *, device=None) -> torch.Tensor:
    """Boolean mask of ``shape`` with ``round(fraction * size)`` (at least 1) ``True`` entries at random.

    ``shape`` is one measurement's shape, e.g. ``(1, 1, A, D)``; entries are chosen uniformly without
    replacement with ``generator`` (CPU), so the global RNG is untouched.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    size = math.prod(shape)
    k = min(size - 1, max(1, round(fraction * size)))
    idx = torch.randperm(size, generator=generator)[:k]
    mask = torch.zeros(size, dtype=torch.bool)
    mask[idx] = True
    return mask.reshape(tuple(shape)).to(device or "cpu")
