"""Adversarial perturbations of the measurements: the attack's entry points and references.

The robustness metric (``docs/robustness.md``, docs/method.md section 4) is, per sample,

``Delta(x, eps) = max_{||delta||_2 <= r} ||f(y + delta) - ref||_2^2``,  ``y = A x``,

with ``r = eps * ||y||_2`` (relative, the default) or ``r = eps`` (absolute), and ``ref = x`` (the
truth, ``target="truth"``) or ``ref = f(y)`` (the clean output, ``target="clean"``: the deviation
measure of Antun et al. 2020). :func:`pga_attack` solves it by projected gradient ascent with random
starts and normalised steps (the step rules of :mod:`ctrobust.attacks.ascent`), keeping the worst
iterate per sample; how it searches is one :class:`~ctrobust.attacks.settings.AttackSettings`.

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
from ctrobust.progress import tqdm  # bars only on a terminal

from ctrobust.attacks.ascent import CONTINUATION_MIN_STEPS, CONTINUATION_STEP, _converged, _mask, _norm, ascent_run
from ctrobust.attacks.ball import _per_sample, eps_radius, random_start_in_ball, random_unit_directions
from ctrobust.attacks.settings import AttackSettings
from ctrobust.seeding import default_generator

__all__ = [
    "AttackResult",
    "pga_attack",
    "random_perturbation",
    "perturbation_radius",
    "squared_error",
    "eval_mode",
    "training_perturbation",
]


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
    converged : Tensor or None
        bool ``(B,)`` on the CPU: in the run that found the sample's worst case, the best loss rose by
        at most 0.5 % (:data:`CONVERGENCE_TOLERANCE`) over the last fifth of the steps, or, for a sample
        that was continued (``AttackSettings.extend``), over the last fifth of a continuation. A sample
        that has not converged would likely gain from more steps.
    attack : str
        ``"apgd"`` or ``"pga"``: the step rule used.
    passes : int
        Forward+backward passes of ``f`` spent (``restarts * steps``, plus the steps of any continuation
        of runs that had not converged, ``AttackSettings.extend``; the final forward-only evaluations of
        each run are not counted).
    """

    delta: torch.Tensor
    reconstruction: torch.Tensor
    error: torch.Tensor
    radius: torch.Tensor
    history: torch.Tensor
    target: str = "truth"
    norm: str = "l2"
    image_delta: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    attack: str = "apgd"
    passes: int = 0

    @property
    def n_not_converged(self) -> int:
        """Number of samples whose best loss still rose by more than 0.5 % over the last fifth of the steps."""
        return 0 if self.converged is None else int((~self.converged).sum())

    @property
    def restart_spread(self) -> torch.Tensor | None:
        """float64 ``(B,)``: how far the second-best independent run fell short of the best,
        ``1 - best_2 / best_1`` (the runs' best losses), or ``None`` with a single restart.

        An empirical error bar on the worst case: the loss of a trained network has several local
        maxima in the ball, and independent runs from random starts land in different ones. A
        spread of a few per cent says that more restarts (or steps) would likely find more: the
        reported worst case is then a lower bound with a visible margin (docs/robustness.md).
        """
        if self.history.shape[0] < 2:
            return None
        runs = self.history.amax(1)  # (restarts, B): each run's best loss
        top = runs.topk(2, dim=0).values
        return (1 - top[1] / top[0].clamp_min(torch.finfo(top.dtype).tiny)).clamp_min(0)

    @property
    def perturbation_norm(self) -> torch.Tensor:
        """float64 ``(B,)``: the l2 (or linf) norm of each sample's ``delta``."""
        return _norm(self.delta, self.norm).double()


# -- per-sample helpers -------------------------------------------------------------------------------


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


def squared_error(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``||estimate - reference||_2^2`` per sample, summed over all pixels: ``(B,)``."""
    return (estimate - reference).flatten(1).pow(2).sum(1)


def _validate_input(y: torch.Tensor, eps: float) -> None:
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


def _settings(settings) -> AttackSettings:
    """``settings``, or the defaults for ``None``; anything else is refused."""
    if settings is None:
        return AttackSettings()
    if not isinstance(settings, AttackSettings):
        raise TypeError(f"settings must be an AttackSettings (ctrobust.attacks.AttackSettings), got "
                        f"{type(settings).__name__}")
    return settings


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


def training_perturbation(
    g: Callable[[torch.Tensor], torch.Tensor],
    reference: torch.Tensor,
    radius: torch.Tensor,
    start: torch.Tensor,
    *,
    steps: int,
    step_size: float,
) -> torch.Tensor:
    """The inner maximisation of per-sample adversarial (PGD) training, with the attack's own step code.

    ``steps`` fixed-step PGA steps (``step_size`` a fraction of ``radius``) on
    ``||g(delta) - reference||^2`` per sample from ``start``; returns the last iterate (detached), at a
    cost of ``steps`` forward+backward passes of ``g`` (the last iterate is not evaluated).
    """

    def evaluate(v, with_grad):
        v_req = v.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = squared_error(g(v_req), reference)
            (grad,) = torch.autograd.grad(loss.sum(), v_req)
        return None, None, grad

    v, _, _, _ = ascent_run(evaluate, start.detach(), radius, steps=int(steps), rule="pga", step_size=float(step_size),
                            norm="l2", last_iterate=True)
    return v.detach()


def _maximise(
    g: Callable[[torch.Tensor], torch.Tensor],
    shape_like: torch.Tensor,
    reference: torch.Tensor,
    radius: torch.Tensor,
    settings: AttackSettings,
    *,
    generator: torch.Generator,
    progress: bool,
    callback,
    init: torch.Tensor | None = None,
):
    """Maximise ``||g(v) - reference||^2`` per sample over ``v`` in the ball of ``radius``.

    ``settings.restarts`` runs of ``settings.rule``: restart 0 starts at ``init`` (when given), the
    others at random points (or 0 without ``settings.random_start``). Returns ``(v_best, g(v_best),
    loss_best, history, converged)``, all detached; ``converged`` is judged on the run that found
    each sample's best (or on the last continuation, ``settings.extend``). Returns also the passes run.
    """
    b = shape_like.shape[0]
    steps, restarts, norm = settings.steps, settings.restarts, settings.norm
    best_v = torch.zeros_like(shape_like)
    best_out = None
    best_loss = torch.full((b,), -math.inf, dtype=torch.float64, device=shape_like.device)
    converged = torch.ones(b, dtype=torch.bool)
    history = torch.empty((restarts, steps + 1, b), dtype=torch.float64)
    total = restarts * steps
    bar = tqdm(total=total, desc=f"{settings.rule.upper()} steps", unit="step", leave=False,
               disable=not progress or total == 0)
    ref = reference

    def evaluate(v, with_grad):
        nonlocal ref
        with torch.set_grad_enabled(with_grad):
            v_req = v.detach().requires_grad_(with_grad)
            out = g(v_req)
            if tuple(out.shape) != tuple(reference.shape):
                raise ValueError(f"x must have the shape of f(y), {tuple(out.shape)}, got {tuple(reference.shape)}")
            if ref.device != out.device or ref.dtype != out.dtype:
                ref = reference.to(out.device, out.dtype)
            loss = squared_error(out, ref)
            grad = None
            if with_grad:
                (grad,) = torch.autograd.grad(loss.sum(), v_req)
                if not torch.isfinite(grad).all():
                    raise FloatingPointError("the gradient w.r.t. the perturbation is not finite; is f differentiable?")
        return loss.detach().double(), out.detach(), grad

    def keep(v, out, loss) -> torch.Tensor:
        """Take each sample's new point where its loss beats the best so far; returns where it did."""
        nonlocal best_v, best_out, best_loss
        better = loss > best_loss
        best_loss = torch.where(better, loss, best_loss)
        best_v = torch.where(_mask(better, v), v, best_v)
        best_out = out.clone() if best_out is None else torch.where(_mask(better, out), out, best_out)
        return better

    try:
        for restart in range(restarts):
            if restart == 0 and init is not None:
                start = init.detach().to(shape_like.device, shape_like.dtype)
                if tuple(start.shape) != tuple(shape_like.shape):
                    raise ValueError(f"init must be shaped like y, {tuple(shape_like.shape)}, got {tuple(start.shape)}")
            elif settings.random_start:
                start = random_start_in_ball(shape_like, radius, generator, norm)
            else:
                start = torch.zeros_like(shape_like)
            v, out, loss, hist = ascent_run(evaluate, start, radius, steps=steps, rule=settings.rule,
                                            step_size=settings.step_size, norm=norm, callback=callback,
                                            restart=restart, bar=bar)
            history[restart] = hist
            better = keep(v, out, loss)
            converged = torch.where(better.cpu(), _converged(hist), converged)
        passes = restarts * steps
        # continuations (a run shorter than 5 steps always counts as converged, so none runs then)
        more = max(steps // 2, CONTINUATION_MIN_STEPS)
        step_size = CONTINUATION_STEP if settings.rule == "apgd" else settings.step_size
        for _ in range(settings.extend):
            if bool(converged.all()):
                break
            bar.total += more
            v, out, loss, hist = ascent_run(evaluate, best_v, radius, steps=more, rule=settings.rule,
                                            step_size=step_size, norm=norm, callback=callback, restart=restarts,
                                            bar=bar)
            passes += more
            keep(v, out, loss)
            converged = converged | _converged(hist)
    finally:
        bar.close()
    return best_v, best_out, best_loss, history, converged, passes


def pga_attack(
    f: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    x: torch.Tensor | None = None,
    eps: float = 0.01,
    settings: AttackSettings | None = None,
    *,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> AttackResult:
    """Worst-case measurement perturbation by projected gradient ascent: adaptive (APGD) or fixed-step.

    Maximises, per sample, ``||f(y + delta) - ref||_2^2`` over ``||delta|| <= r``; how it searches
    (step rule, steps, restarts, step size, ball, target, relative or absolute eps, random starts)
    is ``settings``, one :class:`~ctrobust.attacks.settings.AttackSettings`.

    The default step rule, ``rule="apgd"``, is the APGD of Croce & Hein (ICML 2020) written for a
    per-sample regression loss: the first step is ``4 r`` (``step_size`` overrides the 4, as a
    fraction of the radius), each step moves to ``z = P(delta + eta g / ||g||)`` and then
    ``delta <- P(delta + 0.75 (z - delta) + 0.25 (delta - delta_prev))`` (momentum); at checkpoints
    (after 22 % of the steps, then at shrinking intervals, :func:`~ctrobust.attacks.ascent.apgd_checkpoints`)
    a sample's step is halved and its iterate reset to its best point when fewer than 75 % of the
    steps since the last checkpoint raised its loss, or when neither its step nor its best loss
    changed. It reaches the exact worst case of linear maps in 100 steps, and 89-99.6 % (mean over
    samples) of the best known worst case of trained FBPConvNets, whose loss has many local maxima
    in the ball: for a trained network the result is a lower bound, and ``restarts >= 2`` measure
    how far independent runs disagree (:attr:`AttackResult.restart_spread`; docs/robustness.md).
    ``rule="pga"`` is plain PGA with a fixed step ``delta <- P(delta + step_size r g / ||g||)``
    (default ``step_size = 2.5 / steps``, Madry et al.), as many papers use; it stalls below the
    worst case (71-94 % measured), so use it only to compare with such papers.

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
        Size of the ball, >= 0: a fraction of each sample's ``||y_b||_2`` when ``settings.relative``
        (``0.01`` = 1 % of the sinogram's norm), else absolute units of ``y``. For ``norm="linf"``
        the relative radius is ``eps * max |y_b|``.
    settings : AttackSettings, optional
        Default ``AttackSettings()``: APGD, 100 steps, 1 restart, the l2 ball, target the truth,
        relative eps, random starts. ``warm_start`` is for curves and ignored here.
    init : Tensor, optional
        A start for restart 0, shaped like ``y`` (projected onto the ball): a warm start, e.g. the
        worst perturbation of a smaller eps rescaled (what :func:`ctrobust.evaluation.robustness.robustness_curve`
        does along its grid). The other restarts start at random points, so adding restarts never
        lowers the result.
    generator : torch.Generator, optional
        Source of the random starts (a CPU or same-device generator). Default: a fresh CPU generator
        seeded ``settings.seed`` (0), so results are reproducible and the global RNG is never used.
    progress : bool
        Show a tqdm bar over the steps.
    callback : callable, optional
        ``callback(restart, step, delta)`` for every iterate (``delta`` detached), e.g. to record them.

    Returns
    -------
    AttackResult
        ``delta`` (like ``y``), ``reconstruction`` ``f(y + delta)``, ``error`` (B,) the squared l2
        error of the worst iterate, ``radius`` (B,), ``history`` (restarts, steps + 1, B),
        ``converged`` (B,) and ``passes``.

    Examples
    --------
    >>> from ctrobust.attacks import AttackSettings
    >>> B = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> y = torch.ones(2, 3, dtype=torch.float64)
    >>> res = pga_attack(lambda v: v @ B.T, y, eps=0.1, settings=AttackSettings(target="clean"))
    >>> bool((res.perturbation_norm <= 0.1 * y.norm(dim=1) * (1 + 1e-12)).all())
    True
    >>> exact = (0.1 * y.norm(dim=1)) ** 2 * torch.linalg.matrix_norm(B, 2) ** 2
    >>> bool((res.error >= 0.995 * exact).all())
    True
    """
    settings = _settings(settings)
    _validate_input(y, eps)
    target, norm = settings.target, settings.norm
    if target == "truth" and x is None:
        raise ValueError("target='truth' needs the truth images x (or use target='clean' to attack f(y))")
    gen = generator if generator is not None else torch.Generator(device="cpu").manual_seed(settings.seed)
    y = y.detach()
    radius = perturbation_radius(y, float(eps), settings.relative, norm)
    _check_radius(radius, y)
    if target == "truth" and not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor shaped like f(y), got {type(x).__name__}")
    if target == "truth" and not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values; attack against finite truth images only")
    with eval_mode(f):
        if target == "truth":
            reference = x.detach()  # its shape is checked against f's first output
        else:
            with torch.no_grad():
                reference = f(y).detach()
        delta, rec, err, hist, conv, passes = _maximise(lambda d: f(y + d), y, reference, radius, settings,
                                                        generator=gen, progress=progress, callback=callback, init=init)
    _check_result(err, eps, radius, y)
    return AttackResult(delta, rec, err, radius.double(), hist, target=target, norm=norm, converged=conv,
                        attack=settings.rule, passes=passes)


def _check_radius(radius: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse radii that overflow ``y``'s dtype (an eps of 1e20 relative to a float32 sinogram)."""
    if not torch.isfinite(radius).all() or bool((radius > torch.finfo(y.dtype).max ** 0.5).any()):
        raise ValueError(f"the perturbation radius overflows {y.dtype} (largest {float(radius.max()):.3g}); "
                         "use a sensible eps (relative: a fraction of ||y||, 0.01 = 1 %; absolute: sinogram units)")


def _check_result(error: torch.Tensor, eps: float, radius: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse a non-finite attacked error: f overflowed at this eps."""
    if not torch.isfinite(error).all():
        raise ValueError(f"the attack overflowed {y.dtype} at eps={eps:g} (radius up to {float(radius.max()):.3g}): "
                         "f(y + delta) is not finite; use a smaller eps")


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
    _validate_input(y, eps)
    gen = default_generator(generator)
    radius = perturbation_radius(y, float(eps), relative, "l2")
    _check_radius(radius, y)
    d = random_unit_directions(y.shape, gen, dtype=y.dtype, device=y.device, draw_dtype=None)
    return d * _per_sample(radius, d)
