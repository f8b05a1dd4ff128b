"""Test-time training (Darestani, Liu & Heckel 2022): fine-tune a trained network on one measurement.

For a measurement ``y`` a copy of the trained reconstruction network ``f`` is fitted, self-supervised,
to ``y`` alone by minimising the data-consistency loss

``L(theta) = ||M (y - A f_theta(y~))||_1 / ||M y||_1``

over the measurement bins ``M`` that are not held out. A random 5 % of the bins are held out: their
error ``||H (y - A f_theta(y~))||_1 / ||H y||_1`` is tracked after every step, training stops once it
has not improved for ``patience`` steps, and the parameters with the lowest held-out error are kept.

Honest self-validation: the network input ``y~`` must not contain the held-out values, otherwise a
network that learns to pass its input through would "predict" them. ``y~`` is ``y`` with the held-out
bins replaced (``fill``): for sinograms ``(B, 1, A, D)`` by linear interpolation from the nearest kept
bins of the same view (along the detector axis; no streaks as zeros would make in the FBP), for
vector measurements ``(B, m)`` by zeros (as if those rows had not been measured). After selection the
final reconstruction is ``f_best(y)`` from the complete measurement.

Batch norm layers stay in eval mode (running statistics from training): a single test measurement is
no batch to normalise over. The original ``f`` is never modified (a deep copy is trained; operators
inside ``f`` are shared, not copied).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ctrobust.reconstruction.holdout import holdout_mask
from ctrobust.operators.base import LinearOperator, check_batch

__all__ = ["test_time_train", "TTTInfo", "copy_model", "fill_heldout", "data_consistency"]

FILLS = ("auto", "interpolate", "zero", "none")


@dataclass
class TTTInfo:
    """What test-time training did on one measurement.

    Attributes
    ----------
    steps_run : int
        Optimiser steps taken.
    best_step : int
        Number of steps of the kept parameters (0 = the original network).
    stopped_early : bool
    loss : list of float
        Training loss before each step (relative l1 data error on the kept bins).
    heldout : list of float
        Held-out relative l1 error of the parameters after 0, 1, ... steps.
    consistency_before, consistency_after : float
        ``||y - A f(y)||_1 / ||y||_1`` on all bins for the original and the returned network.
    """

    steps_run: int = 0
    best_step: int = 0
    stopped_early: bool = False
    loss: list = field(default_factory=list)
    heldout: list = field(default_factory=list)
    consistency_before: float = math.nan
    consistency_after: float = math.nan


def copy_model(f: nn.Module) -> nn.Module:
    """A deep copy of ``f`` whose :class:`LinearOperator` submodules are shared with ``f``, not copied."""
    memo = {}
    for module in f.modules():
        # operators may be registered submodules or plain attributes (kept out of the state dict)
        for obj in (module, *vars(module).values()):
            if isinstance(obj, LinearOperator):
                memo[id(obj)] = obj
    return copy.deepcopy(f, memo)


def data_consistency(operator: LinearOperator, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``||M (y - A x)||_1 / ||M y||_1`` per sample, ``(B,)`` (``M`` all bins when ``mask`` is None)."""
    r = (y - operator(x)).abs()
    a = y.abs()
    if mask is not None:
        r, a = r * mask, a * mask
    return r.flatten(1).sum(1) / a.flatten(1).sum(1).clamp_min(torch.finfo(y.dtype).tiny)


def fill_heldout(y: torch.Tensor, mask: torch.Tensor, fill: str = "auto") -> torch.Tensor:
    """``y`` with the bins where ``mask`` is True replaced (see the module docstring).

    ``y`` is one or more measurements ``(B, ...)``; ``mask`` a boolean tensor of the same shape.
    ``fill``: ``"interpolate"`` (linear along the last axis within each row, constant beyond the
    ends), ``"zero"``, ``"none"`` (``y`` unchanged), ``"auto"`` (interpolate when the measurement has
    at least two axes besides the batch, e.g. sinograms ``(B, 1, A, D)``, else zero).
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    if fill == "auto":
        fill = "interpolate" if y.dim() >= 3 else "zero"
    if fill == "none":
        return y.clone()
    if fill == "zero":
        return y.masked_fill(mask, 0.0)
    rows = y.detach().to("cpu", torch.float64).reshape(-1, y.shape[-1]).numpy()
    held = mask.to("cpu").reshape(-1, y.shape[-1]).numpy()
    out = rows.copy()
    grid = np.arange(rows.shape[1])
    for i in np.flatnonzero(held.any(axis=1)):
        keep = ~held[i]
        if keep.any():
            out[i, held[i]] = np.interp(grid[held[i]], grid[keep], rows[i, keep])
        else:
            out[i] = 0.0
    return torch.from_numpy(out).reshape(y.shape).to(y.device, y.dtype)


def test_time_train(
    f: nn.Module,
    operator: LinearOperator,
    y: torch.Tensor,
    *,
    steps: int = 100,
    lr: float = 1e-4,
    holdout: float = 0.05,
    patience: int = 10,
    seed: int = 0,
    fill: str = "auto",
    weights: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, list[TTTInfo]]:
    """Self-supervised fine-tuning of a copy of ``f`` on each measurement; returns the reconstructions.

    Each sample of the batch is treated on its own (a fresh copy of ``f`` per sample). See the module
    docstring for the loss, the held-out bins and the input fill.

    Parameters
    ----------
    f : nn.Module
        Trained network ``y -> x``: ``(B, 1, A, D) -> (B, 1, N, N)`` or ``(B, m) -> (B, n)``. Left
        unchanged (parameters, ``requires_grad`` flags, train/eval mode).
    operator : LinearOperator
        ``A`` of the test measurements (may differ from the one ``f`` was trained with).
    y : torch.Tensor
        Measurements ``(B, *operator.range_shape)``.
    steps : int
        Maximum Adam steps per sample.
    lr : float
        Adam learning rate.
    holdout : float
        Fraction of measurement bins held out for self-validation, in (0, 1) (default 5 %).
    patience : int
        Steps without a new best held-out error before stopping.
    seed : int
        Seed of the held-out bins (the same bins for every sample; the global RNG is untouched).
    fill : {"auto", "interpolate", "zero", "none"}
        How held-out bins are hidden from the network input (:func:`fill_heldout`).
    weights : torch.Tensor, optional
        Per-bin statistical weights ``w >= 0``, shaped like ``y`` (or broadcastable to one sample),
        e.g. ``1 / std`` of the measurement noise (:meth:`ctrobust.operators.noise.LogPoissonNoise.inverse_std`):
        the loss and the held-out error become ``||w M (y - A f)||_1 / ||w M y||_1`` (and the same
        with ``H``), so noisy bins (low-dose rays behind much attenuation) count less. Default: 1.
    progress : bool
        Show a tqdm bar per sample.

    Returns
    -------
    (torch.Tensor, list of TTTInfo)
        Reconstructions ``f_best(y)`` shaped like ``f(y)`` (detached), and one :class:`TTTInfo` per sample.
    """
    from ctrobust.progress import tqdm  # bars only on a terminal

    if not isinstance(f, nn.Module) or not any(True for _ in f.parameters()):
        raise TypeError("test_time_train needs a torch nn.Module with parameters to fine-tune")
    check_batch(y, operator.range_shape, "measurement y", name="test_time_train")
    for name, value in (("steps", steps), ("patience", patience)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"test_time_train: {name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"test_time_train: lr must be positive, got {lr}")
    y = y.detach()
    if weights is not None:
        weights = torch.as_tensor(weights).detach().to(y.device, y.dtype)
        try:
            weights = torch.broadcast_to(weights, y.shape)
        except RuntimeError:
            raise ValueError(f"test_time_train: weights must be shaped like y {tuple(y.shape)} (or broadcast to it), "
                             f"got {tuple(weights.shape)}") from None
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("test_time_train: weights must be finite and >= 0")
    gen = torch.Generator().manual_seed(int(seed))
    held = holdout_mask((1, *operator.range_shape), holdout, gen, device=y.device)
    keep_f, held_f = (~held).to(y.dtype), held.to(y.dtype)
    outputs, infos = [], []
    for b in range(y.shape[0]):
        yb = y[b : b + 1]
        wb = 1.0 if weights is None else weights[b : b + 1]
        ya = yb.abs() * wb
        keep_norm, held_norm = (ya * keep_f).sum(), (ya * held_f).sum()
        y_in = fill_heldout(yb, held, fill)
        model = copy_model(f)
        model.eval()
        params = [p for p in model.parameters()]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        info = TTTInfo()
        with torch.no_grad():
            info.consistency_before = float(data_consistency(operator, model(yb), yb))
        best_err, best_state, since_best = math.inf, None, 0
        bar = tqdm(total=int(steps), desc=f"TTT sample {b}", leave=False, disable=not progress)
        with torch.enable_grad():
            for step in range(int(steps) + 1):
                out = model(y_in)
                r = (yb - operator(out)).abs() * wb
                loss = (r * keep_f).sum() / keep_norm
                err = float(((r * held_f).sum() / held_norm).detach())
                info.heldout.append(err)
                if err < best_err:
                    best_err, since_best, info.best_step = err, 0, step
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
                    if since_best >= patience:
                        info.stopped_early = True
                        break
                if step == steps:
                    break
                info.loss.append(float(loss.detach()))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                info.steps_run = step + 1
                bar.update(1)
        bar.close()
        model.load_state_dict(best_state)
        with torch.no_grad():
            rec = model(yb)
            info.consistency_after = float(data_consistency(operator, rec, yb))
        outputs.append(rec.detach())
        infos.append(info)
    return torch.cat(outputs), infos


test_time_train.__test__ = False  # the name starts with "test_": keep pytest from collecting it
