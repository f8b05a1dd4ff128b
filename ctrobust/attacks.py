"""Adversarial perturbations of the measurements: projected gradient ascent (PGA) and references.

The robustness metric (``docs/robustness.md``, notes/method.md section 4) is, per sample,

``Delta(x, eps) = max_{||delta||_2 <= r} ||f(y + delta) - ref||_2^2``,  ``y = A x``,

with ``r = eps * ||y||_2`` (relative, the default) or ``r = eps`` (absolute), and ``ref = x`` (the
truth, ``target="truth"``) or ``ref = f(y)`` (the clean output, ``target="clean"``: the deviation
measure of Antun et al. 2020). :func:`pga_attack` solves it by projected gradient ascent with random
starts and normalised steps, keeping the worst iterate per sample.

``f`` is any differentiable torch callable from measurements to images: an ``FBPConvNet``
(sinograms ``(B, 1, A, D)`` -> images ``(B, 1, N, N)``), FBP alone, a CS network or a linear map
(``(B, m)`` -> ``(B, n)``), an unrolled TV solver. Norms are taken per sample over all entries of a
measurement (the whole sinogram), with the plain Euclidean inner product.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ctrobust.models.adversary import eps_radius, project_l2_ball

__all__ = [
    "AttackResult",
    "pga_attack",
    "image_space_attack",
    "random_perturbation",
    "perturbation_radius",
    "squared_error",
    "eval_mode",
    "DEFAULT_STEPS",
    "STEP_FACTOR",
]

DEFAULT_STEPS = 50
#: default step size is ``STEP_FACTOR * radius / steps`` (Madry et al.'s 2.5 eps / steps).
STEP_FACTOR = 2.5
TARGETS = ("truth", "clean")
NORMS = ("l2", "linf")


@dataclasses.dataclass
class AttackResult:
    """What an attack found, per sample (all tensors detached, on the device of ``y``).

    Attributes
    ----------
    delta : Tensor
        The worst perturbation found, shaped like ``y``: ``(B, 1, A, D)`` or ``(B, m)``.
    reconstruction : Tensor
        ``f(y + delta)``, shaped like ``f``'s output, e.g. ``(B, 1, N, N)`` or ``(B, n)``.
    error : Tensor
        float64 ``(B,)``: the squared l2 error ``||f(y + delta) - ref||_2^2`` summed over all
        pixels (not averaged), ``ref`` the truth or the clean output (``target``).
    radius : Tensor
        float64 ``(B,)``: the radius of each sample's ball (absolute units of ``y``).
    history : Tensor
        float64 ``(restarts, steps + 1, B)``: the loss of every iterate (iterate 0 is the start).
    target : str
        ``"truth"`` or ``"clean"``.
    norm : str
        ``"l2"`` or ``"linf"``.
    image_delta : Tensor or None
        For :func:`image_space_attack` only: the image perturbation ``r`` with ``delta = A r``.
    """

    delta: torch.Tensor
    reconstruction: torch.Tensor
    error: torch.Tensor
    radius: torch.Tensor
    history: torch.Tensor
    target: str = "truth"
    norm: str = "l2"
    image_delta: torch.Tensor | None = None

    @property
    def perturbation_norm(self) -> torch.Tensor:
        """float64 ``(B,)``: the l2 (or linf) norm of each sample's ``delta``."""
        return _norm(self.delta, self.norm).double()


# -- per-sample helpers -------------------------------------------------------------------------------


def _norm(t: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    flat = t.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` vector to broadcast against ``like`` (B, ...), in ``like``'s dtype."""
    return v.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def _mask(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def perturbation_radius(y: torch.Tensor, eps: float, relative: bool = True, norm: str = "l2") -> torch.Tensor:
    """Radius of each sample's ball, ``(B,)`` in the dtype of ``y``.

    ``eps * ||y_b||`` when ``relative`` (``||.||`` the l2 norm for ``norm="l2"``, the largest
    absolute entry for ``norm="linf"``), else ``eps`` for every sample.
    """
    if norm == "l2":
        return eps_radius(y.detach(), eps, relative).to(y.dtype)
    if relative:
        return eps * _norm(y.detach(), norm)
    return torch.full((y.shape[0],), float(eps), dtype=y.dtype, device=y.device)


def _project(delta: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """Project each sample of ``delta`` onto its ball of radius ``radius`` ``(B,)``."""
    if norm == "linf":
        r = _per_sample(radius, delta)
        return torch.maximum(torch.minimum(delta, r), -r)
    return project_l2_ball(delta, radius)


def _step_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit norm: ``g / ||g||_2`` (l2) or ``sign(g)`` (linf)."""
    if norm == "linf":
        return g.sign()
    n = g.flatten(1).norm(dim=1)
    return g / _per_sample(n.clamp_min(torch.finfo(g.dtype).tiny), g)


def _random_start(y: torch.Tensor, radius: torch.Tensor, norm: str, generator) -> torch.Tensor:
    """A random point inside the ball: a random direction at a uniform fraction of the radius."""
    b = y.shape[0]
    if norm == "linf":
        u = torch.rand(y.shape, generator=generator, dtype=y.dtype, device=generator.device)
        return (2 * u - 1).to(y.device) * _per_sample(radius, y)
    d = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=generator.device).to(y.device)
    frac = torch.rand((b,), generator=generator, dtype=y.dtype, device=generator.device).to(y.device)
    d = d / _per_sample(d.flatten(1).norm(dim=1).clamp_min(torch.finfo(y.dtype).tiny), d)
    return d * _per_sample(radius * frac, d)


def squared_error(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``||estimate - reference||_2^2`` per sample, summed over all pixels: ``(B,)``."""
    return (estimate - reference).flatten(1).pow(2).sum(1)


def _generator_for(device: torch.device, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    # A fixed default seed: library code never draws from the global RNG.
    return torch.Generator(device="cpu").manual_seed(0)


def _validate(y: torch.Tensor, eps: float, steps: int, restarts: int, target: str, norm: str, step_size) -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"y must be a floating-point tensor, got {y.dtype}")
    if y.dim() < 2 or y.shape[0] < 1:
        raise ValueError(f"y must be a batch shaped (B, 1, A, D) or (B, m) with B >= 1, got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values; attack finite measurements only")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (the l2 ball, or the linf box), got {norm!r}")
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive number (a fraction of the radius) or None, got {step_size!r}")


class eval_mode:
    """Context manager: put an ``nn.Module`` (and its children) in eval mode; restore each module's own mode on exit."""

    def __init__(self, f):
        self.modules = list(f.modules()) if isinstance(f, nn.Module) else []

    def __enter__(self):
        self.modes = [m.training for m in self.modules]
        for m in self.modules:
            m.training = False
        return self

    def __exit__(self, *exc):
        for m, mode in zip(self.modules, self.modes):
            m.training = mode
        return False


def _pga(
    g: Callable[[torch.Tensor], torch.Tensor],
    shape_like: torch.Tensor,
    reference: torch.Tensor,
    radius: torch.Tensor,
    *,
    steps: int,
    step_size: float | None,
    restarts: int,
    norm: str,
    generator: torch.Generator,
    random_start: bool,
    progress: bool,
    callback,
):
    """Maximise ``||g(v) - reference||^2`` per sample over ``v`` in the ball of ``radius``.

    Returns ``(v_best, g(v_best), loss_best, history)``, all detached.
    """
    b = shape_like.shape[0]
    alpha = (STEP_FACTOR / max(steps, 1) if step_size is None else step_size) * radius  # (B,)
    best_v = torch.zeros_like(shape_like)
    best_out = None
    best_loss = torch.full((b,), -math.inf, dtype=torch.float64, device=shape_like.device)
    history = torch.empty((restarts, steps + 1, b), dtype=torch.float64)
    total = restarts * steps
    bar = tqdm(total=total, desc="PGA steps", unit="step", leave=False, disable=not progress or total == 0)

    def keep(v, out, loss):
        nonlocal best_out, best_v, best_loss
        better = loss > best_loss
        best_loss = torch.where(better, loss, best_loss)
        best_v = torch.where(_mask(better, v), v, best_v)
        out = out.detach()
        best_out = out.clone() if best_out is None else torch.where(_mask(better, out), out, best_out)

    try:
        for restart in range(restarts):
            if random_start:
                v = _random_start(shape_like, radius, norm, generator)
            else:
                v = torch.zeros_like(shape_like)
            v = _project(v, radius, norm)
            for step in range(steps + 1):
                if callback is not None:
                    callback(restart, step, v.detach())
                last = step == steps
                with torch.set_grad_enabled(not last):
                    v_req = v.detach().requires_grad_(not last)
                    out = g(v_req)
                    if tuple(out.shape) != tuple(reference.shape):
                        raise ValueError(f"x must have the shape of f(y), {tuple(out.shape)}, got {tuple(reference.shape)}")
                    loss = squared_error(out, reference.to(out.device, out.dtype))
                    if not last:
                        (grad,) = torch.autograd.grad(loss.sum(), v_req)
                loss64 = loss.detach().double()
                history[restart, step] = loss64.cpu()
                keep(v.detach(), out, loss64)
                if last:
                    break
                if not torch.isfinite(grad).all():
                    raise FloatingPointError("the gradient w.r.t. the perturbation is not finite; is f differentiable?")
                v = _project(v.detach() + _per_sample(alpha, v) * _step_direction(grad, norm), radius, norm)
                bar.update(1)
    finally:
        bar.close()
    return best_v, best_out, best_loss, history


def pga_attack(
    f: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    x: torch.Tensor | None = None,
    eps: float = 0.01,
    *,
    relative: bool = True,
    steps: int = DEFAULT_STEPS,
    step_size: float | None = None,
    restarts: int = 1,
    target: str = "truth",
    norm: str = "l2",
    generator: torch.Generator | None = None,
    progress: bool = False,
    random_start: bool = True,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> AttackResult:
    """Worst-case measurement perturbation by projected gradient ascent (PGA).

    Maximises, per sample, ``||f(y + delta) - ref||_2^2`` over ``||delta|| <= r``.

    Parameters
    ----------
    f : callable
        Differentiable ``y -> image``: ``(B, 1, A, D) -> (B, 1, N, N)`` or ``(B, m) -> (B, n)``.
        Samples must not interact (an ``nn.Module`` is put in eval mode during the attack, so batch
        norm uses its running statistics, and each module's own train/eval mode is restored after).
        Only ``delta`` is differentiated (``torch.autograd.grad``): ``f``'s parameters and their
        ``.grad`` are left untouched.
    y : Tensor
        Clean measurements ``(B, 1, A, D)`` or ``(B, m)``, finite, float32/float64.
    x : Tensor, optional
        Truth images, shaped like ``f(y)``; required for ``target="truth"``.
    eps : float
        Size of the ball, >= 0: a fraction of each sample's ``||y_b||_2`` when ``relative``
        (``0.01`` = 1 % of the sinogram's norm), else absolute units of ``y``. For ``norm="linf"``
        the relative radius is ``eps * max |y_b|``.
    relative : bool
        Relative (default) or absolute ``eps``.
    steps : int
        Gradient steps per restart (each costs one forward and one backward pass of ``f``).
    step_size : float, optional
        Step length as a fraction of the radius; default ``2.5 / steps`` (Madry et al.), so the
        steps of one restart could cross the ball 1.25 times. Each step is
        ``delta <- P_ball(delta + step_size * r * g / ||g||_2)`` (l2) or
        ``delta <- clip(delta + step_size * r * sign(g), -r, r)`` (linf).
    restarts : int
        Independent starts; the worst iterate over all steps and restarts is kept per sample.
    target : {"truth", "clean"}
        ``ref = x`` (the robustness metric) or ``ref = f(y)`` (deviation from the clean output).
    norm : {"l2", "linf"}
        The ball: Euclidean (default, the project's metric) or the box ``max |delta| <= r``.
    generator : torch.Generator, optional
        Source of the random starts (a CPU or same-device generator). Default: a fresh generator
        seeded 0, so results are reproducible and the global RNG is never used.
    progress : bool
        Show a tqdm bar over the steps.
    random_start : bool
        Every restart starts at a random point inside the ball (a Gaussian direction at a uniform
        random fraction of the radius). With ``False`` every restart starts at ``delta = 0``, which
        is deterministic but stalls where the gradient vanishes at 0 (``target="clean"`` with a
        linear ``f``), so restarts > 1 only make sense with random starts.
    callback : callable, optional
        ``callback(restart, step, delta)`` for every iterate (``delta`` detached), e.g. to record them.

    Returns
    -------
    AttackResult
        ``delta`` (like ``y``), ``reconstruction`` ``f(y + delta)``, ``error`` (B,) the squared l2
        error of the worst iterate, ``radius`` (B,), ``history`` (restarts, steps + 1, B).

    Examples
    --------
    >>> B = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> y = torch.ones(2, 3, dtype=torch.float64)
    >>> res = pga_attack(lambda v: v @ B.T, y, eps=0.1, target="clean", steps=100, step_size=1.0)
    >>> bool((res.perturbation_norm <= 0.1 * y.norm(dim=1) * (1 + 1e-12)).all())
    True
    """
    _validate(y, eps, steps, restarts, target, norm, step_size)
    if target == "truth" and x is None:
        raise ValueError("target='truth' needs the truth images x (or use target='clean' to attack f(y))")
    gen = _generator_for(y.device, generator)
    y = y.detach()
    radius = perturbation_radius(y, float(eps), relative, norm)
    if target == "truth" and not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor shaped like f(y), got {type(x).__name__}")
    with eval_mode(f):
        if target == "truth":
            reference = x.detach()  # its shape is checked against f's first output
        else:
            with torch.no_grad():
                reference = f(y).detach()
        delta, rec, err, hist = _pga(
            lambda d: f(y + d),
            y,
            reference,
            radius,
            steps=int(steps),
            step_size=step_size,
            restarts=int(restarts),
            norm=norm,
            generator=gen,
            random_start=random_start,
            progress=progress,
            callback=callback,
        )
    return AttackResult(delta, rec, err, radius.double(), hist, target=target, norm=norm)


def image_space_attack(
    f: Callable[[torch.Tensor], torch.Tensor],
    operator: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps_x: float = 0.01,
    *,
    y: torch.Tensor | None = None,
    relative: bool = True,
    steps: int = DEFAULT_STEPS,
    step_size: float | None = None,
    restarts: int = 1,
    target: str = "truth",
    generator: torch.Generator | None = None,
    progress: bool = False,
    random_start: bool = True,
) -> AttackResult:
    """Attack through the image: ``delta = A r`` with ``||r||_2 <= eps_x`` (Antun et al.'s setting).

    The perturbation lies in the range of ``A``; the seeds argue that measurement-space attacks
    (:func:`pga_attack`) are the right place to attack, and this is the comparison.

    Parameters
    ----------
    f : callable
        Reconstruction ``y -> image`` as in :func:`pga_attack`.
    operator : LinearOperator or callable
        ``A``: images ``(B, 1, N, N)`` (or ``(B, n)``) to measurements.
    x : Tensor
        Truth images in the operator's domain, ``(B, 1, N, N)`` or ``(B, n)``.
    eps_x : float
        Ball size for ``r``: a fraction of ``||x_b||_2`` when ``relative`` (default), else absolute.
    y : Tensor, optional
        The clean measurements; default ``A x``.
    relative, steps, step_size, restarts, target, generator, progress, random_start
        As in :func:`pga_attack`; ``target="truth"`` compares ``f(y + A r)`` with ``x``.

    Returns
    -------
    AttackResult
        ``delta = A r`` (like ``y``), ``image_delta = r`` (like ``x``), ``radius`` the radius of
        the ball for ``r``; ``error`` as in :func:`pga_attack`.
    """
    x = x.detach()
    with torch.no_grad():
        y = operator(x) if y is None else y.detach()
    _validate(y, eps_x, steps, restarts, target, "l2", step_size)
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    gen = _generator_for(x.device, generator)
    radius = perturbation_radius(x, float(eps_x), relative, "l2")
    with eval_mode(f):
        if target == "truth":
            reference = x
        else:
            with torch.no_grad():
                reference = f(y).detach()
        r, rec, err, hist = _pga(
            lambda v: f(y + operator(v)),
            x,
            reference,
            radius,
            steps=int(steps),
            step_size=step_size,
            restarts=int(restarts),
            norm="l2",
            generator=gen,
            random_start=random_start,
            progress=progress,
            callback=None,
        )
        with torch.no_grad():
            delta = operator(r)
    return AttackResult(delta, rec, err, radius.double(), hist, target=target, norm="l2", image_delta=r)


def random_perturbation(
    y: torch.Tensor,
    eps: float,
    *,
    relative: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian noise scaled to exactly the radius of the l2 ball: the reference an attack must beat.

    Parameters
    ----------
    y : Tensor
        Measurements ``(B, 1, A, D)`` or ``(B, m)``.
    eps : float
        ``||delta_b||_2 = eps * ||y_b||_2`` when ``relative`` (default), else ``eps``.
    generator : torch.Generator, optional
        Source of the noise; default a fresh generator seeded 0 (never the global RNG).

    Returns
    -------
    Tensor
        ``delta`` shaped like ``y``, each sample of l2 norm exactly the radius (up to rounding).
    """
    _validate(y, eps, 0, 1, "clean", "l2", None)
    gen = _generator_for(y.device, generator)
    radius = perturbation_radius(y, float(eps), relative, "l2")
    d = torch.randn(y.shape, generator=gen, dtype=y.dtype, device=gen.device).to(y.device)
    d = d / _per_sample(d.flatten(1).norm(dim=1), d)
    return d * _per_sample(radius, d)
