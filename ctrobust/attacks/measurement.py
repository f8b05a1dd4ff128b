"""Adversarial perturbations of the measurements: projected gradient ascent (PGA) and references.

The robustness metric (``docs/robustness.md``, docs/method.md section 4) is, per sample,

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
from ctrobust.progress import tqdm  # bars only on a terminal

from ctrobust.attacks.ball import _per_sample, eps_radius, project_l2_ball, random_start_in_ball, random_unit_directions
from ctrobust.seeding import default_generator

__all__ = [
    "AttackResult",
    "pga_attack",
    "image_space_attack",
    "random_perturbation",
    "perturbation_radius",
    "squared_error",
    "eval_mode",
    "apgd_checkpoints",
    "training_perturbation",
    "ATTACKS",
    "DEFAULT_STEPS",
    "STEP_FACTOR",
    "CONVERGENCE_TOLERANCE",
]

#: gradient steps per restart of the default attack (each one forward and one backward pass of f)
DEFAULT_STEPS = 100
#: ``attack="pga"``'s default step size is ``STEP_FACTOR * radius / steps`` (Madry et al.'s 2.5 eps / steps).
STEP_FACTOR = 2.5
#: APGD: first step as a fraction of the radius, momentum, and the fraction of loss-raising steps
#: between checkpoints below which the step is halved (Croce & Hein 2020; they start at 2 r: for this
#: regression loss 4 r reached more of the worst case at every eps measured, docs/robustness.md).
APGD_INITIAL_STEP = 4.0
APGD_MOMENTUM = 0.75
APGD_RHO = 0.75
#: a run has converged when its best loss rose by at most this fraction over the last fifth of its steps
CONVERGENCE_TOLERANCE = 0.005
TARGETS = ("truth", "clean")
NORMS = ("l2", "linf")
ATTACKS = ("apgd", "pga")


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
        at most 0.5 % (:data:`CONVERGENCE_TOLERANCE`) over the last fifth of the steps. A sample that
        has not converged would likely gain from more steps.
    attack : str
        ``"apgd"`` or ``"pga"``: the step rule used.
    passes : int
        Forward+backward passes of ``f`` spent (``restarts * steps``; the final forward-only
        evaluations of each run are not counted).
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


def _norm(t: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    flat = t.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


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


def squared_error(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``||estimate - reference||_2^2`` per sample, summed over all pixels: ``(B,)``."""
    return (estimate - reference).flatten(1).pow(2).sum(1)


def _validate(y: torch.Tensor, eps: float, steps: int, restarts: int, target: str, norm: str, step_size,
              attack: str = "apgd") -> None:
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
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS} (adaptive APGD, or fixed-step PGA), got {attack!r}")


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


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step (Croce & Hein 2020, section 3.2).

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``; the checkpoints
    are ``ceil(p_j * steps)`` for ``0 < p_j < 1``, first after 22 % of the budget, then at shrinking
    intervals down to 6 %.

    >>> apgd_checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    points, p_prev, p = [], 0.0, 0.22
    while p < 1.0:
        w = int(math.ceil(p * steps - 1e-9))
        if 0 < w < steps and (not points or w > points[-1]):
            points.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return points


def _converged(history: torch.Tensor, tolerance: float = CONVERGENCE_TOLERANCE) -> torch.Tensor:
    """``(B,)`` bool from one run's losses ``(steps + 1, B)``: the best loss rose by at most
    ``tolerance`` (relative) over the last fifth of the steps."""
    running = torch.cummax(history, dim=0).values
    n = history.shape[0] - 1
    if n < 5:
        return torch.ones(history.shape[1], dtype=torch.bool)
    before = running[n - max(1, n // 5)]
    gain = running[-1] - before
    return gain <= tolerance * before.abs().clamp_min(torch.finfo(history.dtype).tiny)


def _ascent_run(evaluate, start, radius, *, steps, rule, step_size, norm, callback=None, restart=0, bar=None,
                last_iterate=False):
    """One run of projected ascent from ``start``; ``evaluate(v, grad)`` -> ``(loss64, out, grad)``.

    Returns ``(best_v, best_out, best_loss, history (steps + 1, B))``. ``rule`` is ``"apgd"``
    (adaptive step with momentum and checkpoints) or ``"pga"`` (fixed step ``step_size * radius``).
    With ``last_iterate`` (PGA only; adversarial training) the last iterate is returned without
    evaluating it: ``(v_last, None, None, None)``, ``steps`` passes in all.
    """
    if bar is None:
        bar = tqdm(disable=True)
    b = start.shape[0]
    history = torch.empty((steps + 1, b), dtype=torch.float64)
    v = _project(start, radius, norm)
    state = {}

    def keep(v, out, loss, grad):
        if not state:
            state.update(v=v.clone(), out=out.clone(), loss=loss.clone(), grad=None if grad is None else grad.clone())
            return
        better = loss > state["loss"]
        state["loss"] = torch.where(better, loss, state["loss"])
        state["v"] = torch.where(_mask(better, v), v, state["v"])
        state["out"] = torch.where(_mask(better, out), out, state["out"])
        if grad is not None and state["grad"] is not None:
            state["grad"] = torch.where(_mask(better, grad), grad, state["grad"])

    def step(k, v):
        if callback is not None:
            callback(restart, k, v.detach())
        loss, out, grad = evaluate(v, k < steps)
        history[k] = loss.cpu()
        keep(v, out, loss, grad)
        return loss, grad

    if rule == "pga":
        alpha = _per_sample(step_size * radius, start)
        if last_iterate:
            for k in range(steps):
                _, _, grad = evaluate(v, True)
                v = _project(v + alpha * _step_direction(grad, norm), radius, norm)
            return v, None, None, None
        for k in range(steps + 1):
            loss, grad = step(k, v)
            if k == steps:
                break
            v = _project(v + alpha * _step_direction(grad, norm), radius, norm)
            bar.update(1)
        return state["v"], state["out"], state["loss"], history

    # APGD (Croce & Hein 2020) for a per-sample regression loss: momentum 0.75, step halved (and the
    # iterate reset to the best point) at checkpoints where fewer than 75 % of the steps since the
    # last one raised the loss, or where neither the step nor the best loss changed.
    eta = (step_size if step_size is not None else APGD_INITIAL_STEP) * radius.to(torch.float64)  # (B,)
    checkpoints = set(apgd_checkpoints(steps))
    last_checkpoint = 0
    increases = torch.zeros(b, dtype=torch.int64, device=start.device)
    eta_at_checkpoint = eta.clone()
    best_at_checkpoint = None
    v_prev = v
    loss_prev = None
    for k in range(steps + 1):
        loss, grad = step(k, v)
        if best_at_checkpoint is None:
            best_at_checkpoint = state["loss"].clone()
        if loss_prev is not None:
            increases += (loss > loss_prev).to(torch.int64)
        loss_prev = loss
        if k == steps:
            break
        if k in checkpoints:
            few = increases.double() < APGD_RHO * (k - last_checkpoint)
            stuck = (eta_at_checkpoint == eta) & (best_at_checkpoint == state["loss"])
            reduce = few | stuck
            eta = torch.where(reduce, eta / 2, eta)
            m = _mask(reduce, v)
            v = torch.where(m, state["v"], v)
            grad = torch.where(m, state["grad"], grad)
            v_prev = torch.where(m, v, v_prev)
            loss_prev = torch.where(reduce, state["loss"], loss_prev)
            increases.zero_()
            last_checkpoint = k
            eta_at_checkpoint = eta.clone()
            best_at_checkpoint = state["loss"].clone()
        z = _project(v + _per_sample(eta, v) * _step_direction(grad, norm), radius, norm)
        momentum = 1.0 if k == 0 else APGD_MOMENTUM
        v_next = _project(v + momentum * (z - v) + (1 - momentum) * (v - v_prev), radius, norm)
        v_prev, v = v, v_next
        bar.update(1)
    return state["v"], state["out"], state["loss"], history


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

    v, _, _, _ = _ascent_run(evaluate, start.detach(), radius, steps=int(steps), rule="pga", step_size=float(step_size),
                             norm="l2", last_iterate=True)
    return v.detach()


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
    attack: str = "apgd",
    init: torch.Tensor | None = None,
):
    """Maximise ``||g(v) - reference||^2`` per sample over ``v`` in the ball of ``radius``.

    Restart 0 starts at ``init`` (when given), the others at random points (or 0 without
    ``random_start``). Returns ``(v_best, g(v_best), loss_best, history, converged)``, all detached;
    ``converged`` is judged on the run that found each sample's best.
    """
    b = shape_like.shape[0]
    if attack == "pga":
        step_size = STEP_FACTOR / max(steps, 1) if step_size is None else step_size
    best_v = torch.zeros_like(shape_like)
    best_out = None
    best_loss = torch.full((b,), -math.inf, dtype=torch.float64, device=shape_like.device)
    converged = torch.ones(b, dtype=torch.bool)
    history = torch.empty((restarts, steps + 1, b), dtype=torch.float64)
    total = restarts * steps
    bar = tqdm(total=total, desc=f"{attack.upper()} steps", unit="step", leave=False,
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

    try:
        for restart in range(restarts):
            if restart == 0 and init is not None:
                start = init.detach().to(shape_like.device, shape_like.dtype)
                if tuple(start.shape) != tuple(shape_like.shape):
                    raise ValueError(f"init must be shaped like y, {tuple(shape_like.shape)}, got {tuple(start.shape)}")
            elif random_start:
                start = random_start_in_ball(shape_like, radius, generator, norm)
            else:
                start = torch.zeros_like(shape_like)
            v, out, loss, hist = _ascent_run(evaluate, start, radius, steps=steps, rule=attack, step_size=step_size,
                                             norm=norm, callback=callback, restart=restart, bar=bar)
            history[restart] = hist
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_v = torch.where(_mask(better, v), v, best_v)
            best_out = out.clone() if best_out is None else torch.where(_mask(better, out), out, best_out)
            converged = torch.where(better.cpu(), _converged(hist), converged)
    finally:
        bar.close()
    return best_v, best_out, best_loss, history, converged


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
    attack: str = "apgd",
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    random_start: bool = True,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> AttackResult:
    """Worst-case measurement perturbation by projected gradient ascent: adaptive (APGD) or fixed-step.

    Maximises, per sample, ``||f(y + delta) - ref||_2^2`` over ``||delta|| <= r``.

    The default step rule, ``attack="apgd"``, is the APGD of Croce & Hein (ICML 2020) written for a
    per-sample regression loss: the first step is ``4 r`` (``step_size`` overrides the 4, as a
    fraction of the radius), each step moves to ``z = P(delta + eta g / ||g||)`` and then
    ``delta <- P(delta + 0.75 (z - delta) + 0.25 (delta - delta_prev))`` (momentum); at checkpoints
    (after 22 % of the steps, then at shrinking intervals, :func:`apgd_checkpoints`) a sample's step
    is halved and its iterate reset to its best point when fewer than 75 % of the steps since the
    last checkpoint raised its loss, or when neither its step nor its best loss changed. It reaches
    the exact worst case of linear maps in 100 steps, and 89-99.6 % (mean over samples) of the best
    known worst case of trained FBPConvNets, whose loss has many local maxima in the ball: for a
    trained network the result is a lower bound, and ``restarts >= 2`` measure how far independent
    runs disagree (:attr:`AttackResult.restart_spread`; docs/robustness.md).
    ``attack="pga"`` is plain PGA with a fixed step ``delta <- P(delta + step_size r g / ||g||)``
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
        Size of the ball, >= 0: a fraction of each sample's ``||y_b||_2`` when ``relative``
        (``0.01`` = 1 % of the sinogram's norm), else absolute units of ``y``. For ``norm="linf"``
        the relative radius is ``eps * max |y_b|``.
    relative : bool
        Relative (default) or absolute ``eps``.
    steps : int
        Gradient steps per restart (each costs one forward and one backward pass of ``f``), default 100.
    step_size : float, optional
        APGD: the initial step as a fraction of the radius (default 4). PGA: the fixed step as a
        fraction of the radius (default ``2.5 / steps``).
    restarts : int
        Independent runs; the worst iterate over all steps and runs is kept per sample. Restart 0
        starts at ``init`` when given, the others at random points, so adding restarts never lowers
        the result.
    target : {"truth", "clean"}
        ``ref = x`` (the robustness metric) or ``ref = f(y)`` (deviation from the clean output).
    norm : {"l2", "linf"}
        The ball: Euclidean (default, the project's metric) or the box ``max |delta| <= r``.
    attack : {"apgd", "pga"}
        The step rule (see above).
    init : Tensor, optional
        A start for restart 0, shaped like ``y`` (projected onto the ball): a warm start, e.g. the
        worst perturbation of a smaller eps rescaled (what :func:`ctrobust.evaluation.robustness.robustness_curve`
        does along its grid).
    generator : torch.Generator, optional
        Source of the random starts (a CPU or same-device generator). Default: a fresh generator
        seeded 0, so results are reproducible and the global RNG is never used.
    progress : bool
        Show a tqdm bar over the steps.
    random_start : bool
        Restarts without ``init`` start at a random point inside the ball (a Gaussian direction at a
        uniform random fraction of the radius). With ``False`` they start at ``delta = 0``, which
        is deterministic but stalls where the gradient vanishes at 0 (``target="clean"`` with a
        linear ``f``), so restarts > 1 only make sense with random starts.
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
    >>> B = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> y = torch.ones(2, 3, dtype=torch.float64)
    >>> res = pga_attack(lambda v: v @ B.T, y, eps=0.1, target="clean")
    >>> bool((res.perturbation_norm <= 0.1 * y.norm(dim=1) * (1 + 1e-12)).all())
    True
    >>> exact = (0.1 * y.norm(dim=1)) ** 2 * torch.linalg.matrix_norm(B, 2) ** 2
    >>> bool((res.error >= 0.995 * exact).all())
    True
    """
    _validate(y, eps, steps, restarts, target, norm, step_size, attack)
    if target == "truth" and x is None:
        raise ValueError("target='truth' needs the truth images x (or use target='clean' to attack f(y))")
    gen = default_generator(generator)
    y = y.detach()
    radius = perturbation_radius(y, float(eps), relative, norm)
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
        delta, rec, err, hist, conv = _pga(
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
            attack=attack,
            init=init,
        )
    _check_result(err, eps, radius, y)
    return AttackResult(delta, rec, err, radius.double(), hist, target=target, norm=norm, converged=conv,
                        attack=attack, passes=int(steps) * int(restarts))


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
    attack: str = "apgd",
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
    relative, steps, step_size, restarts, target, attack, generator, progress, random_start
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
    _validate(y, eps_x, steps, restarts, target, "l2", step_size, attack)
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    gen = default_generator(generator)
    radius = perturbation_radius(x, float(eps_x), relative, "l2")
    _check_radius(radius, x)
    with eval_mode(f):
        if target == "truth":
            reference = x
        else:
            with torch.no_grad():
                reference = f(y).detach()
        r, rec, err, hist, conv = _pga(
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
            attack=attack,
        )
        with torch.no_grad():
            delta = operator(r)
    return AttackResult(delta, rec, err, radius.double(), hist, target=target, norm="l2", image_delta=r,
                        converged=conv, attack=attack, passes=int(steps) * int(restarts))


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
    gen = default_generator(generator)
    radius = perturbation_radius(y, float(eps), relative, "l2")
    _check_radius(radius, y)
    d = random_unit_directions(y.shape, gen, dtype=y.dtype, device=y.device, draw_dtype=None)
    return d * _per_sample(radius, d)
