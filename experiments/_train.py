"""Training for the vector (compressed-sensing / linear) experiments, through the project's objectives.

:func:`train_vector_model` trains a model ``(B, m) -> (B, n)`` on vectorised images with one of the
objectives of :mod:`ctrobust.training.objectives` (plain, weight-decay, parseval, minmax, pgd,
universal, jitter), following the objective protocol the trainer uses: ``objective.setup(model,
operator)`` once, then per step ``objective.loss(model, x, y)`` -> backward -> optimiser step ->
``objective.after_step(model)``. The min-max adversary G, the shared (universal) perturbation, the
Parseval retraction and the weight decay are therefore exactly the project's.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["train_vector_model"]


def train_vector_model(
    model: torch.nn.Module,
    operator,
    objective,
    x_train: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    lr_drops: Sequence[float] = (),
    lr_drop_factor: float = 0.1,
    seed: int = 0,
    x_val: torch.Tensor | None = None,
    log_every: int = 0,
    progress: bool = False,
) -> dict:
    """Train ``model`` with ``objective`` by Adam; returns a log ``{"steps", "seconds", "history"}``.

    Parameters
    ----------
    model : torch.nn.Module
        ``(B, m) -> (B, n)``; trained in place (left in eval mode).
    operator : LinearOperator
        ``A``, ``(B, n) -> (B, m)``; measurements are ``y = A x`` (noise-free), computed per batch.
    objective : ctrobust.training.objectives.Objective
        The loss; ``setup`` is called here.
    x_train : torch.Tensor
        Training signals ``(K, n)``.
    steps, batch_size, lr : int, int, float
        Adam steps, samples per step (``batch_size >= K`` means full-batch gradient descent), step size.
    lr_drops : sequence of float
        Fractions of ``steps`` at which the learning rate is multiplied by ``lr_drop_factor``.
    seed : int
        Seed of the batch order (a private ``torch.Generator``; the global RNG is not used).
    x_val : torch.Tensor, optional
        Validation signals ``(K', n)``: the clean per-pixel MSE is logged every ``log_every`` steps.
    """
    objective.setup(model, operator, device="cpu")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    milestones = sorted({int(round(f * steps)) for f in lr_drops if 0 < f < 1})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=lr_drop_factor)
    gen = torch.Generator().manual_seed(int(seed))
    K = x_train.shape[0]
    full = batch_size >= K
    if full:
        with torch.no_grad():
            y_full = operator(x_train)
    history = []
    perm, pos = None, K
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"train {objective.name}", disable=not progress, leave=False)
    for step in bar:
        if full:
            x, y = x_train, y_full
        else:
            if pos + batch_size > K:
                perm, pos = torch.randperm(K, generator=gen), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            x = x_train[idx]
            with torch.no_grad():
                y = operator(x)
        loss, logs = objective.loss(model, x, y, model)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"{objective.name}: loss became {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        objective.after_step(model)
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            entry = {"step": step, **{k: float(v) for k, v in logs.items()}, "lr": opt.param_groups[0]["lr"]}
            if x_val is not None:
                model.eval()
                with torch.no_grad():
                    entry["val_mse"] = float(torch.mean((model(operator(x_val)) - x_val) ** 2))
                model.train()
            history.append(entry)
            bar.set_postfix(loss=f"{float(loss):.3g}")
    model.eval()
    return {"steps": steps, "seconds": time.perf_counter() - t0, "history": history}
