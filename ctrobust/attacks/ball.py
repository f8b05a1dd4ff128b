"""The perturbation ball and the random draws every attack, objective and model shares.

One home for the helpers that used to be copied across ``attacks``, ``training.objectives``,
``worst_case`` and ``models.adversary``:

- :func:`eps_radius`: the l2 radius of each sample's ball, ``eps * ||y_b||_2`` (relative) or ``eps``;
- :func:`project_l2_ball`: the per-sample projection onto that ball;
- :func:`random_unit_directions`: Gaussian directions normalised per sample (uniform on the sphere);
- :func:`random_start_in_ball`: a random point inside the l2 ball (or the linf box) to start an ascent;

Randomness only ever comes from an explicit ``torch.Generator``; the global RNG is never used. The
draw order and dtypes of each helper are part of its contract (same seed, same numbers), so callers
that need the exact stream of an older release pass ``draw_dtype`` as documented.
The formulas are in docs/method.md (section "The perturbation ball").
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["eps_radius", "project_l2_ball", "random_unit_directions", "random_start_in_ball"]


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` vector to broadcast against ``like`` ``(B, ...)``, in ``like``'s dtype."""
    return v.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def eps_radius(y: torch.Tensor, eps: float, relative: bool = True) -> torch.Tensor:
    """Per-sample radius of the perturbation ball, shape ``(B,)``, on ``y``'s device and dtype.

    Parameters
    ----------
    y : torch.Tensor
        Measurements ``(B, ...)`` (sinograms ``(B, 1, A, D)`` or CS vectors ``(B, m)``).
    eps : float
        Relative level (``radius_b = eps * ||y_b||_2``) or absolute radius (``relative=False``).
    relative : bool
        See ``eps``.

    The radius carries no gradient (it is a constraint, not part of the objective).

    Examples
    --------
    >>> y = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    >>> eps_radius(y, 0.1)
    tensor([0.5000, 0.1000])
    >>> eps_radius(y, 0.1, relative=False)
    tensor([0.1000, 0.1000])
    """
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if relative:
        return eps * y.detach().flatten(1).norm(dim=1)
    return torch.full((y.shape[0],), float(eps), dtype=y.dtype, device=y.device)


def project_l2_ball(delta: torch.Tensor, radius) -> torch.Tensor:
    """Project each sample of ``delta`` ``(B, ...)`` onto the l2 ball of its radius.

    ``radius`` is a float or a ``(B,)`` tensor. Samples inside the ball are returned unchanged;
    others are scaled onto the sphere. Differentiable.

    Examples
    --------
    >>> project_l2_ball(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]])
    """
    b = delta.shape[0]
    norms = delta.flatten(1).norm(dim=1)
    if not isinstance(radius, torch.Tensor):
        radius = torch.full((b,), float(radius), dtype=delta.dtype, device=delta.device)
    radius = radius.to(delta.dtype).reshape(b)
    scale = torch.clamp(radius / norms.clamp_min(torch.finfo(delta.dtype).tiny), max=1.0)
    return delta * scale.reshape(b, *([1] * (delta.dim() - 1)))


def random_unit_directions(shape: Sequence[int], generator: torch.Generator, *, dtype: torch.dtype,
                           device, draw_dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """Random directions ``shape = (B, ...)`` of unit l2 norm per sample (uniform on each sphere).

    One standard-normal draw of ``shape`` from ``generator`` (on the generator's device, in
    ``draw_dtype``; ``None`` means ``dtype``), moved to ``device`` / ``dtype``, divided by each
    sample's norm. The draw dtype fixes the random stream: float64 (default) gives the same
    directions for float32 and float64 callers; the attacks draw in the measurement's dtype.

    Examples
    --------
    >>> u = random_unit_directions((3, 5), torch.Generator().manual_seed(0), dtype=torch.float64, device="cpu")
    >>> [round(float(n), 12) for n in u.norm(dim=1)]
    [1.0, 1.0, 1.0]
    """
    draw = dtype if draw_dtype is None else draw_dtype
    z = torch.randn(tuple(shape), generator=generator, dtype=draw, device=generator.device).to(device=device, dtype=dtype)
    return z / _per_sample(z.flatten(1).norm(dim=1).clamp_min(torch.finfo(dtype).tiny), z)


def random_start_in_ball(y: torch.Tensor, radius: torch.Tensor, generator: torch.Generator,
                         norm: str = "l2") -> torch.Tensor:
    """A random point inside each sample's ball of radius ``radius`` ``(B,)``, shaped like ``y``.

    l2: a random unit direction (drawn in ``y``'s dtype) at a uniform fraction of the radius (the
    fractions are drawn after the directions). linf: uniform in the box ``[-radius_b, radius_b]``.
    Draws on the generator's device, then moves to ``y``'s device.
    """
    b = y.shape[0]
    if norm == "linf":
        u = torch.rand(y.shape, generator=generator, dtype=y.dtype, device=generator.device)
        return (2 * u - 1).to(y.device) * _per_sample(radius, y)
    d = random_unit_directions(y.shape, generator, dtype=y.dtype, device=y.device, draw_dtype=None)
    frac = torch.rand((b,), generator=generator, dtype=y.dtype, device=generator.device).to(y.device)
    return d * _per_sample(radius * frac, d)
