"""Projected gradient ascent in a ball: the step rules, one ascent run, the convergence check.

An attack maximises a per-sample loss over perturbations ``v`` in a ball of radius ``r`` (per sample):
the l2 ball ``||v||_2 <= r`` or the linf box ``max |v| <= r`` (:data:`NORMS`). One *run*
(:func:`ascent_run`) starts at a point, evaluates the loss and its gradient at every iterate, keeps
the best iterate per sample and moves by a *step rule*. The step rules are the entries of
:data:`STEP_RULES`, name -> factory: ``STEP_RULES[name](radius, like, steps=..., step_size=...,
norm=...)`` returns the run's step function ``step(k, v, loss, grad, best) -> v_next`` (a closure
holding the rule's own state, e.g. APGD's step sizes and momentum):

- ``"apgd"`` (:func:`apgd_rule`): the APGD of Croce & Hein (ICML 2020) for a per-sample regression
  loss, adaptive step with momentum, halved at checkpoints (:func:`apgd_checkpoints`);
- ``"pga"`` (:func:`pga_rule`): plain PGA with a fixed step ``step_size * r`` (Madry et al.).

Nothing here knows what is attacked: the loss comes from the ``evaluate`` callable of the caller
(:mod:`ctrobust.attacks.measurement`, :mod:`ctrobust.attacks.image_space`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from ctrobust.attacks.ball import _per_sample, project_l2_ball

__all__ = [
    "STEP_RULES",
    "NORMS",
    "apgd_rule",
    "pga_rule",
    "ascent_run",
    "apgd_checkpoints",
    "DEFAULT_STEPS",
    "STEP_FACTOR",
    "APGD_INITIAL_STEP",
    "APGD_MOMENTUM",
    "APGD_RHO",
    "CONVERGENCE_TOLERANCE",
]

#: gradient steps per restart of the default attack (each one forward and one backward pass of f)
DEFAULT_STEPS = 100
#: ``"pga"``'s default step size is ``STEP_FACTOR * radius / steps`` (Madry et al.'s 2.5 eps / steps).
STEP_FACTOR = 2.5
#: APGD: first step as a fraction of the radius, momentum, and the fraction of loss-raising steps
#: between checkpoints below which the step is halved (Croce & Hein 2020; they start at 2 r: for this
#: regression loss 4 r reached more of the worst case at every eps measured, docs/robustness.md).
APGD_INITIAL_STEP = 4.0
APGD_MOMENTUM = 0.75
APGD_RHO = 0.75
#: a run has converged when its best loss rose by at most this fraction over the last fifth of its steps
CONVERGENCE_TOLERANCE = 0.005
#: a continuation of a run that has not converged: APGD's first step as a fraction of the radius (it starts
#: at the run's best point, so a full 4 r first step would throw it out of the basin it was climbing)
CONTINUATION_STEP = 0.5
#: ... and its steps: ``max(steps // 2, CONTINUATION_MIN_STEPS)``
CONTINUATION_MIN_STEPS = 10

#: a step function: ``step(k, v, loss, grad, best) -> v_next`` for iterate ``k < steps``; ``loss`` float64
#: ``(B,)`` and ``grad`` (like ``v``) at ``v``, ``best`` the run's best so far (``{"v", "out", "loss",
#: "grad"}``, per sample)
StepFunction = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]


# -- the balls -----------------------------------------------------------------------------------------
def _norm(t: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Per-sample l2 norm, or largest absolute entry (``norm="linf"``): ``(B,)``."""
    flat = t.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _mask(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _project_linf(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    r = _per_sample(radius, delta)
    return torch.maximum(torch.minimum(delta, r), -r)


#: norm name -> projection ``(delta, radius (B,)) -> delta`` onto each sample's ball
PROJECTIONS = {"l2": project_l2_ball, "linf": _project_linf}
#: the balls an attack can use: Euclidean (the project's metric) or the box
NORMS = tuple(PROJECTIONS)


def _project(delta: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """Project each sample of ``delta`` onto its ball of radius ``radius`` ``(B,)``."""
    return PROJECTIONS[norm](delta, radius)


def _step_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit norm: ``g / ||g||_2`` (l2) or ``sign(g)`` (linf)."""
    if norm == "linf":
        return g.sign()
    n = g.flatten(1).norm(dim=1)
    return g / _per_sample(n.clamp_min(torch.finfo(g.dtype).tiny), g)


# -- the step rules ------------------------------------------------------------------------------------
def pga_rule(radius: torch.Tensor, like: torch.Tensor, *, steps: int, step_size: float | None,
             norm: str) -> StepFunction:
    """Fixed-step PGA: ``v <- P(v + step_size r g / ||g||)`` (default ``step_size = 2.5 / steps``).

    Uses only the gradient, so it can run without evaluating the loss (``ascent_run(last_iterate=True)``).
    """
    size = STEP_FACTOR / max(steps, 1) if step_size is None else step_size
    alpha = _per_sample(size * radius, like)

    def step(k, v, loss, grad, best):
        return _project(v + alpha * _step_direction(grad, norm), radius, norm)

    return step


def apgd_rule(radius: torch.Tensor, like: torch.Tensor, *, steps: int, step_size: float | None,
              norm: str) -> StepFunction:
    """APGD (Croce & Hein 2020) for a per-sample regression loss.

    First step ``eta = 4 r`` (``step_size`` overrides the 4); each step moves to ``z = P(v + eta
    g / ||g||)`` and then ``v <- P(v + 0.75 (z - v) + 0.25 (v - v_prev))`` (momentum; the first step
    takes ``z``). At the checkpoints of :func:`apgd_checkpoints` a sample's step is halved, and its
    iterate reset to its best point, when fewer than 75 % of the steps since the last checkpoint
    raised its loss, or when neither its step nor its best loss changed.
    """
    eta = (step_size if step_size is not None else APGD_INITIAL_STEP) * radius.to(torch.float64)  # (B,)
    checkpoints = set(apgd_checkpoints(steps))
    s = {"eta": eta, "eta_at_checkpoint": eta.clone(), "best_at_checkpoint": None, "last_checkpoint": 0,
         "increases": torch.zeros(like.shape[0], dtype=torch.int64, device=like.device), "v_prev": None,
         "loss_prev": None}

    def step(k, v, loss, grad, best):
        if s["v_prev"] is None:  # the start
            s["v_prev"] = v
        if s["best_at_checkpoint"] is None:
            s["best_at_checkpoint"] = best["loss"].clone()
        if s["loss_prev"] is not None:
            s["increases"] += (loss > s["loss_prev"]).to(torch.int64)
        s["loss_prev"] = loss
        if k in checkpoints:
            few = s["increases"].double() < APGD_RHO * (k - s["last_checkpoint"])
            stuck = (s["eta_at_checkpoint"] == s["eta"]) & (s["best_at_checkpoint"] == best["loss"])
            reduce = few | stuck
            s["eta"] = torch.where(reduce, s["eta"] / 2, s["eta"])
            m = _mask(reduce, v)
            v = torch.where(m, best["v"], v)
            grad = torch.where(m, best["grad"], grad)
            s["v_prev"] = torch.where(m, v, s["v_prev"])
            s["loss_prev"] = torch.where(reduce, best["loss"], s["loss_prev"])
            s["increases"].zero_()
            s["last_checkpoint"] = k
            s["eta_at_checkpoint"] = s["eta"].clone()
            s["best_at_checkpoint"] = best["loss"].clone()
        z = _project(v + _per_sample(s["eta"], v) * _step_direction(grad, norm), radius, norm)
        momentum = 1.0 if k == 0 else APGD_MOMENTUM
        v_next = _project(v + momentum * (z - v) + (1 - momentum) * (v - s["v_prev"]), radius, norm)
        s["v_prev"] = v
        return v_next

    return step


#: step rule name -> factory of the run's step function (see the module docstring)
STEP_RULES: dict[str, Callable[..., StepFunction]] = {"apgd": apgd_rule, "pga": pga_rule}


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


# -- one run -------------------------------------------------------------------------------------------
def ascent_run(evaluate, start, radius, *, steps, rule, step_size, norm, callback=None, restart=0, bar=None,
               last_iterate=False):
    """One run of projected ascent from ``start``; ``evaluate(v, with_grad)`` -> ``(loss64, out, grad)``.

    Returns ``(best_v, best_out, best_loss, history (steps + 1, B))``: the best iterate per sample
    over the ``steps + 1`` iterates (the start included). ``rule`` names an entry of
    :data:`STEP_RULES`. With ``last_iterate`` (rules that use only the gradient, ``"pga"``;
    adversarial training) the last iterate is returned without evaluating it:
    ``(v_last, None, None, None)``, ``steps`` passes in all.
    """
    if rule not in STEP_RULES:
        raise ValueError(f"rule must be one of {tuple(STEP_RULES)}, got {rule!r}")
    if last_iterate and rule != "pga":
        raise ValueError(f"last_iterate needs a rule that uses only the gradient ('pga'), got {rule!r}")
    if bar is None:
        bar = tqdm(disable=True)
    step_rule = STEP_RULES[rule](radius, start, steps=steps, step_size=step_size, norm=norm)
    v = _project(start, radius, norm)
    if last_iterate:
        for k in range(steps):
            _, _, grad = evaluate(v, True)
            v = step_rule(k, v, None, grad, None)
        return v, None, None, None
    history = torch.empty((steps + 1, start.shape[0]), dtype=torch.float64)
    best = {}

    def keep(v, out, loss, grad):
        if not best:
            best.update(v=v.clone(), out=out.clone(), loss=loss.clone(), grad=None if grad is None else grad.clone())
            return
        better = loss > best["loss"]
        best["loss"] = torch.where(better, loss, best["loss"])
        best["v"] = torch.where(_mask(better, v), v, best["v"])
        best["out"] = torch.where(_mask(better, out), out, best["out"])
        if grad is not None and best["grad"] is not None:
            best["grad"] = torch.where(_mask(better, grad), grad, best["grad"])

    for k in range(steps + 1):
        if callback is not None:
            callback(restart, k, v.detach())
        loss, out, grad = evaluate(v, k < steps)
        history[k] = loss.cpu()
        keep(v, out, loss, grad)
        if k == steps:
            break
        v = step_rule(k, v, loss, grad, best)
        bar.update(1)
    return best["v"], best["out"], best["loss"], history
