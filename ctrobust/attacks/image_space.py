"""The image-space attack: perturbations ``delta = A r`` in the range of the operator (Antun et al.'s setting).

The seeds argue that measurement-space attacks (:func:`~ctrobust.attacks.measurement.pga_attack`) are
the right place to attack; :func:`image_space_attack` is the comparison: it searches the image
perturbation ``r`` in an l2 ball and feeds ``A r`` to the reconstruction.
"""

from __future__ import annotations

from typing import Callable

import torch

from ctrobust.attacks.measurement import (AttackResult, _check_radius, _maximise, _settings, _validate_input,
                                          eval_mode, perturbation_radius)
from ctrobust.attacks.settings import AttackSettings

__all__ = ["image_space_attack"]


def image_space_attack(
    f: Callable[[torch.Tensor], torch.Tensor],
    operator: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps_x: float = 0.01,
    settings: AttackSettings | None = None,
    *,
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AttackResult:
    """Attack through the image: ``delta = A r`` with ``||r||_2 <= eps_x`` (Antun et al.'s setting).

    Parameters
    ----------
    f : callable
        Reconstruction ``y -> image`` as in :func:`~ctrobust.attacks.measurement.pga_attack`.
    operator : LinearOperator or callable
        ``A``: images ``(B, 1, N, N)`` (or ``(B, n)``) to measurements.
    x : Tensor
        Truth images in the operator's domain, ``(B, 1, N, N)`` or ``(B, n)``.
    eps_x : float
        Ball size for ``r``: a fraction of ``||x_b||_2`` when ``settings.relative`` (default), else absolute.
    settings : AttackSettings, optional
        As in :func:`~ctrobust.attacks.measurement.pga_attack` (default ``AttackSettings()``); the
        ball of ``r`` is the l2 ball (``settings.norm`` must be ``"l2"``), and ``target="truth"``
        compares ``f(y + A r)`` with ``x``.
    y : Tensor, optional
        The clean measurements; default ``A x``.
    generator, progress
        As in :func:`~ctrobust.attacks.measurement.pga_attack`.

    Returns
    -------
    AttackResult
        ``delta = A r`` (like ``y``), ``image_delta = r`` (like ``x``), ``radius`` the radius of
        the ball for ``r``; ``error`` as in :func:`~ctrobust.attacks.measurement.pga_attack`.
    """
    settings = _settings(settings)
    if settings.norm != "l2":
        raise ValueError(f"image_space_attack searches an l2 ball of images; settings.norm must be 'l2', "
                         f"got {settings.norm!r}")
    x = x.detach()
    with torch.no_grad():
        y = operator(x) if y is None else y.detach()
    _validate_input(y, eps_x)
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    gen = generator if generator is not None else torch.Generator(device="cpu").manual_seed(settings.seed)
    radius = perturbation_radius(x, float(eps_x), settings.relative, "l2")
    _check_radius(radius, x)
    with eval_mode(f):
        if settings.target == "truth":
            reference = x
        else:
            with torch.no_grad():
                reference = f(y).detach()
        r, rec, err, hist, conv, passes = _maximise(lambda v: f(y + operator(v)), x, reference, radius, settings,
                                                    generator=gen, progress=progress, callback=None)
        with torch.no_grad():
            delta = operator(r)
    return AttackResult(delta, rec, err, radius.double(), hist, target=settings.target, norm="l2", image_delta=r,
                        converged=conv, attack=settings.rule, passes=passes)
