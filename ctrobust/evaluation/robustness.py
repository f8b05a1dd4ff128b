"""Robustness curves: clean, random-noise and worst-case (PGA) errors of a reconstruction over an eps grid.

For every sample ``x`` of a dataset, ``y = A x`` (noise-free), and every ``eps`` of the grid, three
inputs are reconstructed:

- ``clean``: ``f(y)`` (the same at every eps; repeated per eps so each eps has a complete table);
- ``random``: ``f(y + n)``, ``n`` Gaussian scaled to exactly the radius (the reference an attack must beat);
- ``attack``: ``f(y + delta)``, ``delta`` found by :func:`ctrobust.attacks.pga_attack` with the curve's
  :class:`~ctrobust.attacks.AttackSettings` (APGD by default). The eps values are attacked in
  increasing order; the worst perturbation of the previous eps, rescaled to the new radius, is also
  tried (one forward pass), or with ``warm_start=True`` starts the attack's first run. The previous
  eps's worst perturbation itself lies in the larger ball too, so a sample's attacked error never
  decreases along the grid.

With ``linearization=True`` (the default) every row also carries ``jacobian_norm`` ``||J_f(y)||_2``
(the local amplification), and the attack rows ``first_order_sq_error``, the worst case of the linearised
problem (:mod:`ctrobust.attacks.worst_case`): for a linear reconstruction (FBP) it is the exact worst case,
also written as ``exact_sq_error``, and ``attack_over_exact`` says how much of it the attack reached.

The radius is ``eps * ||y||_2`` per sample (relative, the default) or ``eps`` (absolute). Per sample
and condition the table holds MSE (mean over pixels), relative error ``||f - x|| / ||x||``, PSNR (dB,
data range 1), SSIM (images only), ``sq_error = ||f - x||^2`` (the robustness metric
``Delta(x, eps)`` for the attack rows) and ``deviation = ||f(y + d) - f(y)||^2`` (the change from the
clean output). See docs/robustness.md.

Results are plain lists of dicts (no pandas): ``RobustnessResult.rows`` per sample,
``RobustnessResult.summary`` mean and std per eps and condition.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from ctrobust.progress import tqdm  # bars only on a terminal

from ctrobust.evaluation import metrics as _metrics
from ctrobust.attacks import (AttackSettings, eval_mode, perturbation_radius, pga_attack, random_perturbation,
                              squared_error)
from ctrobust.attacks.worst_case import default_budget, is_linear, linearized_worst_case
from ctrobust.operators.noise import apply_noise, measure

__all__ = [
    "RobustnessResult",
    "robustness_curve",
    "clean_metrics",
    "summarize",
    "CONDITIONS",
    "METRICS",
    "DEFAULT_EPS_GRID",
    "verify_attack",
    "verification_settings",
    "VERIFY_STEPS",
    "VERIFY_RESTARTS",
    "VERIFY_SEED",
    "NOISE_CONDITION",
]

CONDITIONS = ("clean", "random", "attack")
#: with a noise model: ``dose`` is ``f`` on the noisy measurement (the error the noise itself causes)
NOISE_CONDITION = "dose"
_ORDER = ("clean", NOISE_CONDITION, "random", "attack")
#: per-sample quantities in every row (psnr/ssim only when reconstructions are images)
METRICS = ("mse", "relative_error", "psnr", "ssim", "sq_error", "deviation", "perturbation_norm", "radius",
           "converged", "restart_spread", "jacobian_norm", "first_order_sq_error", "first_order_relative_error", "exact_sq_error",
           "exact_relative_error", "attack_over_exact", "noise_level")
CLEAN_METRICS = ("mse", "relative_error", "psnr", "ssim", "sq_error")
DEFAULT_EPS_GRID = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04)
#: :func:`verify_attack`'s strong budget (steps x random restarts) and the seed of its random starts
VERIFY_STEPS = 300
VERIFY_RESTARTS = 5
VERIFY_SEED = 1


@dataclasses.dataclass
class RobustnessResult:
    """A robustness curve.

    Attributes
    ----------
    eps_grid : list of float
        The eps values, relative to ``||y||_2`` unless ``config["relative"]`` is False.
    rows : list of dict
        One row per (eps, sample, condition): ``eps``, ``sample`` (dataset index), ``condition``
        and the quantities of :data:`METRICS` (floats; psnr/ssim absent for vector outputs).
    summary : list of dict
        One row per (eps, condition): ``eps``, ``condition``, ``n`` and ``<metric>_mean`` /
        ``<metric>_std`` (population std) for each metric.
    config : dict
        The settings, JSON-able: the attack's (:meth:`~ctrobust.attacks.AttackSettings.to_config`:
        ``attack`` the step rule, steps, restarts, step_size, norm, target, relative, random_start,
        warm_start, seed) and the curve's (n_samples, batch_size, eps_grid, linearization, noise).
    examples : dict
        CPU tensors of the first few samples for figures: ``x`` (truth), ``y``, ``clean``, and per
        eps (keyed by the eps value as a float) ``attack``, ``delta``, ``random``.
    """

    eps_grid: list
    rows: list
    summary: list
    config: dict
    examples: dict = dataclasses.field(default_factory=dict)

    def curve(self, metric: str = "relative_error", condition: str = "attack") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(eps, mean, std)`` arrays of one metric and condition along the grid."""
        rows = [r for r in self.summary if r["condition"] == condition]
        if not rows or f"{metric}_mean" not in rows[0]:
            raise KeyError(f"no {metric!r} for condition {condition!r} in this result")
        rows.sort(key=lambda r: r["eps"])
        return (np.array([r["eps"] for r in rows]), np.array([r[f"{metric}_mean"] for r in rows]),
                np.array([r[f"{metric}_std"] for r in rows]))

    def to_dict(self) -> dict:
        """JSON-able ``{"config", "eps_grid", "summary"}`` (per-sample rows go to CSV)."""
        return {"config": self.config, "eps_grid": list(self.eps_grid), "summary": self.summary}


def summarize(rows: Iterable[dict], keys: Sequence[str] = ("eps", "condition")) -> list[dict]:
    """Mean and (population) std of every numeric column, grouped by ``keys``, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        row = dict(zip(keys, key))
        row["n"] = len(members)
        for name in METRICS:
            values = [m[name] for m in members if name in m and m[name] is not None]
            if values:
                row.update(_metrics.mean_std(name, values))
                if name == "attack_over_exact":  # the worst sample matters for a reviewer
                    row[f"{name}_min"] = float(np.min(np.asarray(values, dtype=np.float64)))
        out.append(row)
    return out


def _item(sample) -> torch.Tensor:
    return sample[0] if isinstance(sample, (tuple, list)) else sample


def _batches(dataset, n: int, batch_size: int):
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        yield idx, torch.stack([torch.as_tensor(_item(dataset[i])) for i in idx])


def _to_domain(x: torch.Tensor, operator) -> torch.Tensor:
    """Dataset images ``(B, 1, N, N)`` to the operator's domain (vectorised for CS operators)."""
    shape = tuple(operator.domain_shape)
    if tuple(x.shape[1:]) == shape:
        return x
    if x[0].numel() == math.prod(shape):
        return x.reshape(x.shape[0], *shape)
    raise ValueError(f"dataset images {tuple(x.shape[1:])} do not fit the operator's domain {shape}")


def _image_view(t: torch.Tensor, operator) -> torch.Tensor:
    """Reconstructions as ``(B, 1, H, W)`` images when the operator knows its 2-D image shape."""
    if t.dim() == 4:
        return t
    shape = tuple(getattr(operator, "image_shape", ()) or ())
    if len(shape) == 2 and t[0].numel() == math.prod(shape):
        return t.reshape(t.shape[0], 1, *shape)
    return t


def _device_of(f, device):
    if device is not None:
        return torch.device(device)
    if isinstance(f, nn.Module):
        for p in f.parameters():
            return p.device
        for b in f.buffers():
            return b.device
    return torch.device("cpu")


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _metric_rows(rec, x_img, clean, radius, delta, operator) -> list[dict]:
    rec_img = _image_view(rec, operator)
    m = _metrics.all_metrics(rec_img, x_img)
    sq = squared_error(rec.double(), x_img.reshape(rec.shape).double()).cpu().numpy()
    dev = squared_error(rec.double(), clean.double()).cpu().numpy()
    pn = delta.flatten(1).double().norm(dim=1).cpu().numpy() if delta is not None else np.zeros(len(sq))
    rad = radius.double().cpu().numpy()
    rows = []
    for i in range(len(sq)):
        row = {k: float(v[i]) for k, v in m.items()}
        row.update(sq_error=float(sq[i]), deviation=float(dev[i]), perturbation_norm=float(pn[i]), radius=float(rad[i]))
        rows.append(row)
    return rows


def _take(res, better: torch.Tensor, delta: torch.Tensor, reconstruction: torch.Tensor, error: torch.Tensor,
          converged: torch.Tensor | None = None) -> None:
    """Replace ``res``'s delta / reconstruction / error (and converged) by the given ones where ``better``."""
    if not bool(better.any()):
        return
    res.delta = torch.where(better.reshape(-1, *([1] * (res.delta.dim() - 1))), delta.to(res.delta.dtype), res.delta)
    res.reconstruction = torch.where(better.reshape(-1, *([1] * (res.reconstruction.dim() - 1))),
                                     reconstruction.to(res.reconstruction.dtype), res.reconstruction)
    res.error = torch.where(better, error, res.error)
    if converged is not None and res.converged is not None:
        res.converged = torch.where(better.cpu(), converged, res.converged)


def _keep_candidate(f, y, reference, res, candidate) -> None:
    """Evaluate ``f(y + candidate)`` (forward only) and keep it per sample where it beats the attack."""
    with torch.no_grad(), eval_mode(f):
        out = f(y + candidate)
    err = squared_error(out.double(), reference.double().reshape(out.shape)).to(res.error.device)
    _take(res, err > res.error, candidate, out, err)


def _keep_previous_if_worse(res, prev) -> None:
    """Where a smaller eps's worst perturbation (inside the larger ball too) beat this attack, keep it."""
    _take(res, prev.error > res.error, prev.delta, prev.reconstruction, prev.error, prev.converged)


def _lanczos_progress(linear: bool, total: int, progress: bool):
    """A tqdm bar over the linearisation's Lanczos iterations (a phase of its own: each iteration costs a
    forward and a backward pass of FBP, or about three backward passes of a network) and its callback."""
    what = "exact worst case (Lanczos)" if linear else "Jacobian norm, first-order worst case (Lanczos)"
    bar = tqdm(total=total, desc=what, unit="it", leave=False, disable=not progress)

    def step(iterations: int, change: float) -> None:
        bar.update(iterations - bar.n)
        if change == change:  # not nan: a convergence check ran
            bar.set_postfix_str(f"change {change:.1e}", refresh=False)

    return bar, step


def robustness_curve(
    f: Callable[[torch.Tensor], torch.Tensor],
    dataset,
    operator,
    eps_grid: Sequence[float] = DEFAULT_EPS_GRID,
    settings: AttackSettings | None = None,
    *,
    batch_size: int = 8,
    progress: bool = True,
    max_samples: int | None = None,
    device=None,
    n_examples: int = 4,
    linearization: bool = True,
    linearization_iterations: int | None = None,
    noise=None,
) -> RobustnessResult:
    """Clean, random-noise and PGA-attacked metrics of ``f`` on ``dataset`` for each eps.

    Parameters
    ----------
    f : callable
        Reconstruction, measurements -> images: ``(B, 1, A, D) -> (B, 1, N, N)`` or ``(B, m) -> (B, n)``.
    dataset : Dataset
        Items ``(1, N, N)`` float tensors in [0, 1] (or tuples whose first entry is one).
    operator : LinearOperator
        ``A``, giving ``y = A x`` (noise-free); images are vectorised for CS operators.
    eps_grid : sequence of float
        Perturbation sizes >= 0, relative to ``||y||_2`` per sample (or absolute,
        ``settings.relative=False``). ``eps = 0`` is evaluated without attacking (all three
        conditions equal the clean one).
    settings : AttackSettings, optional
        The attack, one value (default ``AttackSettings()``: APGD, 100 steps, 1 restart, the l2 ball,
        target the truth, relative eps); passed to :func:`ctrobust.attacks.pga_attack` at every eps.
        Curves use the l2 ball (``settings.norm="l2"``). ``settings.warm_start``: start each attack's
        first run from the previous eps's worst perturbation rescaled to the new radius instead of a
        random point; off by default: on trained FBPConvNets it measured weaker (the run stays in the
        smaller ball's basin: 97.2 % of the best known worst case at eps 0.01 against 98.7 % from a
        random start, docs/robustness.md); the rescaled perturbation is tried either way.
        ``settings.seed``: seed of the random starts, the random-noise reference (per eps and batch,
        so results do not depend on ``max_samples``) and of the measurement ``noise``. The global
        RNG is not used.
    batch_size : int
        Samples per batch.
    progress : bool
        tqdm bars over samples (and over the attack's steps); off when not a terminal.
    max_samples : int, optional
        Use only the first ``max_samples`` samples.
    device : torch.device or str, optional
        Where to compute; default the device of ``f``'s parameters (CPU for plain callables).
    n_examples : int
        Number of leading samples whose tensors are kept in ``examples`` for figures.
    linearization : bool
        Also compute ``jacobian_norm`` and the linearised worst case per sample and eps (exact for a
        linear ``f``: ``exact_sq_error``, ``attack_over_exact``), once per batch for the whole grid; a
        Lanczos iteration costs about three backward passes of a network, one forward and one backward
        pass of a linear ``f``. ``config["linearization_runs"]`` records the iterations and seconds
        per batch; with ``progress`` a bar shows them. On by default, as on the command line
        (``--no-linearization``).
    linearization_iterations : int, optional
        Lanczos iterations at most (default from :func:`ctrobust.attacks.worst_case.default_budget`:
        300 for a linear ``f``, stopping once the values change by < 1e-6 relative; 20 for a network,
        stopping at < 1e-3).
    noise : callable, optional
        A measurement noise model ``noise(y, generator)`` (e.g. :class:`ctrobust.operators.noise.LogPoissonNoise`):
        the measured data are ``y = noise(A x)`` (seeded per sample, :func:`ctrobust.operators.noise.measure`), the attack and the
        random reference perturb them (radii relative to the noisy ``||y||_2``, deviations from
        ``f(y)``), ``clean`` stays ``f(A x)`` and a fourth condition ``dose`` holds ``f(y)`` with
        ``perturbation_norm = ||y - A x||_2`` (the noise as a perturbation, comparable with eps).

    Returns
    -------
    RobustnessResult
    """
    settings = _curve_settings(settings)
    relative, target, seed = settings.relative, settings.target, settings.seed
    eps_grid = [float(e) for e in eps_grid]
    if not eps_grid or any(not math.isfinite(e) or e < 0 for e in eps_grid):
        raise ValueError(f"eps_grid must be a non-empty list of finite numbers >= 0, got {eps_grid!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    if n < 1:
        raise ValueError("the dataset is empty (or max_samples < 1): nothing to evaluate")
    dev = _device_of(f, device)
    rows: list[dict] = []
    examples: dict = {}
    if hasattr(noise, "bind"):  # operator-dependent parameters (log-Poisson's mu) filled in, and recorded
        noise = noise.bind(operator)
    config = {**settings.to_config(), "n_samples": n, "batch_size": int(batch_size), "eps_grid": eps_grid,
              "linearization": bool(linearization),
              "noise": noise.to_config() if hasattr(noise, "to_config") else (None if noise is None else repr(noise))}
    noise_model = noise  # (``noise`` is the random reference's draw below)
    linear = is_linear(f)
    lin_iters, lin_tol = default_budget(f)  # (300, 1e-6) for a linear f, (30, 1e-3) for a network
    lin_iters = linearization_iterations or lin_iters
    if linearization:
        config["linearization_budget"] = {"max_iterations": int(lin_iters), "tol": lin_tol}
        config["linearization_runs"] = []  # per batch: Lanczos iterations, converged, seconds
    order = sorted(range(len(eps_grid)), key=lambda i: eps_grid[i])  # attack small eps first (warm starts)
    bar = tqdm(total=n, desc="samples", unit="sample", disable=not progress)
    try:
        for b_index, (idx, x) in enumerate(_batches(dataset, n, batch_size)):
            x = _to_domain(x.to(dev), operator)
            with torch.no_grad():
                y_free = operator(x)
            y = apply_noise(y_free, noise_model, seed=seed, indices=idx, operator=operator)  # per sample
            with torch.no_grad(), eval_mode(f):
                clean = f(y)
            x_img = _image_view(x, operator)
            zero_r = torch.zeros(len(idx), dtype=torch.float64)
            clean_rows = _metric_rows(clean, x_img, clean, zero_r, None, operator)
            dose_rows = None
            if noise_model is not None:  # clean = f(A x); dose = f(noisy y), the noise as the perturbation
                with torch.no_grad(), eval_mode(f):
                    free = f(y_free)
                n_norm = (y - y_free).flatten(1).double().norm(dim=1).cpu()
                dose_rows = _metric_rows(clean, x_img, free, n_norm, y - y_free, operator)
                levels = n_norm / y_free.flatten(1).double().norm(dim=1).cpu().clamp_min(1e-300)
                for row, level in zip(dose_rows, levels.tolist()):
                    row["noise_level"] = level  # ||y - A x|| / ||A x||: the noise on the eps axis
                clean_rows = _metric_rows(free, x_img, free, zero_r, None, operator)
            keep = [i for i, s in enumerate(idx) if s < n_examples]
            if keep:
                for name, t in (("x", x_img), ("y", y), ("clean", _image_view(clean, operator))):
                    examples[name] = torch.cat([examples[name], t[keep].detach().cpu()]) if name in examples else t[keep].detach().cpu()
            lin = None
            x_norm = x_img.flatten(1).double().norm(dim=1).cpu()
            if linearization:
                radii = torch.stack([perturbation_radius(y, e, relative) for e in eps_grid])
                lin_bar, lin_step = _lanczos_progress(linear, lin_iters, progress)
                t_lin = time.perf_counter()
                try:
                    with eval_mode(f):
                        lin = linearized_worst_case(f, y, None if target == "clean" else x.reshape(clean.shape), radii,
                                                    max_iterations=lin_iters, tol=lin_tol, seed=seed, callback=lin_step)
                finally:
                    lin_bar.close()
                config["linearization_runs"].append({"batch": b_index, "iterations": lin.iterations,
                                                     "converged": bool(lin.converged),
                                                     "seconds": round(time.perf_counter() - t_lin, 3)})
                for row, jn in zip(clean_rows, lin.jacobian_norm.tolist()):
                    row["jacobian_norm"] = jn
            previous = None  # (eps, AttackResult) of the last attacked eps of this batch
            for e_index in order:
                eps = eps_grid[e_index]
                spread = None
                if eps == 0:
                    results = {"random": (clean, zero_r, None), "attack": (clean, zero_r, None)}
                    ex_delta = torch.zeros_like(y)
                    ex_random = ex_attack = clean
                    res = None
                else:
                    noise = random_perturbation(y, eps, relative=relative,
                                                generator=torch.Generator().manual_seed(_seed(seed, 1, e_index, b_index)))
                    with torch.no_grad(), eval_mode(f):
                        noisy = f(y + noise)
                    scaled = None  # the previous eps's worst perturbation, rescaled to this radius
                    if previous is not None:
                        prev_res = previous[1]
                        scale = perturbation_radius(y, eps, relative) / prev_res.radius.to(y.dtype).clamp_min(
                            torch.finfo(y.dtype).tiny)
                        scaled = prev_res.delta * scale.reshape(-1, *([1] * (y.dim() - 1)))
                    res = pga_attack(f, y, x.reshape(clean.shape), eps, settings,
                                     init=scaled if settings.warm_start else None,
                                     generator=torch.Generator().manual_seed(_seed(seed, 2, e_index, b_index)),
                                     progress=progress)
                    if previous is not None:
                        if not settings.warm_start:  # still try the rescaled worst case of the previous eps: one forward pass
                            _keep_candidate(f, y, clean if target == "clean" else x.reshape(clean.shape), res, scaled)
                        _keep_previous_if_worse(res, previous[1])
                    previous = (eps, res)
                    spread = res.restart_spread
                    results = {"random": (noisy, res.radius, noise), "attack": (res.reconstruction, res.radius, res.delta)}
                    ex_delta, ex_random, ex_attack = res.delta, noisy, res.reconstruction
                per_condition = {"clean": clean_rows}
                if dose_rows is not None:
                    per_condition[NOISE_CONDITION] = dose_rows
                for cond, (rec, radius, delta) in results.items():
                    per_condition[cond] = _metric_rows(rec, x_img, clean, radius, delta, operator)
                for i, row in enumerate(per_condition["attack"]):
                    if res is not None and res.converged is not None:
                        row["converged"] = float(res.converged[i])
                    if spread is not None:
                        row["restart_spread"] = float(spread[i])
                    if lin is not None:
                        xn = float(x_norm[i]) or 1.0
                        pred = float(lin.predicted[e_index, i])
                        row["jacobian_norm"] = float(lin.jacobian_norm[i])
                        row["first_order_sq_error"] = pred
                        row["first_order_relative_error"] = math.sqrt(max(pred, 0.0)) / xn
                        if linear:  # of the attacked objective: the error (truth) or the deviation (clean)
                            attacked = row["deviation"] if target == "clean" else row["sq_error"]
                            exact = max(pred, attacked) if eps > 0 else attacked
                            row["exact_sq_error"] = exact
                            row["exact_relative_error"] = math.sqrt(max(exact, 0.0)) / xn
                            row["attack_over_exact"] = attacked / exact if exact > 0 else 1.0
                for cond in (c for c in _ORDER if c in per_condition):
                    for s, row in zip(idx, per_condition[cond]):
                        rows.append({"eps": eps, "sample": int(s), "condition": cond, **row})
                if keep:
                    ex = examples.setdefault(eps, {})
                    for name, t in (("delta", ex_delta), ("attack", _image_view(ex_attack, operator)),
                                    ("random", _image_view(ex_random, operator))):
                        t = t[keep].detach().cpu()
                        ex[name] = torch.cat([ex[name], t]) if name in ex else t
            bar.update(len(idx))
    finally:
        bar.close()
    rows.sort(key=lambda r: (r["eps"], _ORDER.index(r["condition"]), r["sample"]))
    return RobustnessResult(eps_grid, rows, summarize(rows), config, examples)


def clean_metrics(
    f: Callable[[torch.Tensor], torch.Tensor],
    dataset,
    operator,
    *,
    batch_size: int = 8,
    max_samples: int | None = None,
    progress: bool = True,
    device=None,
    noise=None,
    seed: int = 0,
) -> tuple[list[dict], dict]:
    """Metrics of ``f(A x)`` on a dataset: ``(rows per sample, summary)``.

    The summary holds ``n`` and ``<metric>_mean`` / ``<metric>_std`` for MSE, relative error, PSNR,
    SSIM and ``sq_error``. Same conventions as :func:`robustness_curve` (clean condition only). With a
    ``noise`` model the metrics are those of ``f`` on the noisy measurement (the ``dose`` condition,
    noise seeded by ``seed`` as in :func:`robustness_curve`).
    """
    result = robustness_curve(f, dataset, operator, [0.0], AttackSettings(seed=seed), batch_size=batch_size,
                              progress=progress, max_samples=max_samples, device=device, n_examples=0,
                              linearization=False, noise=noise)
    cond = "clean" if noise is None else NOISE_CONDITION
    rows = [{"sample": r["sample"], **{k: r[k] for k in CLEAN_METRICS if k in r}}
            for r in result.rows if r["condition"] == cond]
    full = next(s for s in result.summary if s["condition"] == cond)
    summary = {"n": full["n"]}
    for name in CLEAN_METRICS:
        for stat in ("mean", "std"):
            if f"{name}_{stat}" in full:
                summary[f"{name}_{stat}"] = full[f"{name}_{stat}"]
    return rows, summary


def _curve_settings(settings) -> AttackSettings:
    """``settings`` (default ``AttackSettings()``) if a robustness curve can use it."""
    settings = AttackSettings() if settings is None else settings
    if not isinstance(settings, AttackSettings):
        raise TypeError(f"settings must be an AttackSettings (ctrobust.attacks.AttackSettings), got "
                        f"{type(settings).__name__}")
    if settings.norm != "l2":
        raise ValueError(f"robustness curves measure the l2 ball (radius eps ||y||_2, the random reference and "
                         f"the linearised worst case are l2); settings.norm must be 'l2', got {settings.norm!r}")
    return settings


def verification_settings(config: dict, *, steps: int = VERIFY_STEPS, restarts: int = VERIFY_RESTARTS,
                          seed: int = VERIFY_SEED) -> AttackSettings:
    """The attack of :func:`verify_attack` for a curve recorded as ``config`` (:attr:`RobustnessResult.config`).

    The curve's step rule, target, ball and eps convention with a much stronger budget: ``steps`` x
    ``restarts`` runs from random starts (seeded ``seed``), each at the rule's default step size.
    """
    return AttackSettings.from_config(config).replace(steps=steps, restarts=restarts, seed=seed, step_size=None,
                                                      random_start=True, warm_start=False)


def verify_attack(
    f: Callable[[torch.Tensor], torch.Tensor],
    dataset,
    operator,
    result: RobustnessResult,
    n_samples: int = 4,
    settings: AttackSettings | None = None,
    *,
    progress: bool = False,
    device=None,
    noise=None,
) -> list[dict]:
    """Check that an attack converged: a much stronger budget on the first ``n_samples`` samples.

    For every eps > 0 of ``result`` (a :func:`robustness_curve` of ``f``), runs
    :func:`~ctrobust.attacks.pga_attack` with ``settings``, by default
    :func:`verification_settings` ``(result.config)``: the curve's rule, target and eps convention,
    ``VERIFY_STEPS`` (300) steps x ``VERIFY_RESTARTS`` (5) random restarts seeded ``VERIFY_SEED``
    (1). The settings' target, ball and eps convention must be the curve's (the errors are compared).
    Takes per sample the larger of its squared error and the curve's. Returns one row per eps:
    ``eps``, ``n``, ``ratio_mean`` / ``ratio_min`` (the curve's squared error over the strong one:
    1 means the default found the worst case the strong budget found), the relative errors of both,
    and the passes per sample of each.
    """
    cfg = result.config
    curve = AttackSettings.from_config(cfg)
    settings = verification_settings(cfg) if settings is None else _curve_settings(settings)
    for name in ("target", "relative", "norm"):
        if getattr(settings, name) != getattr(curve, name):
            raise ValueError(f"verify_attack: settings.{name} is {getattr(settings, name)!r} but the curve was "
                             f"measured with {getattr(curve, name)!r}; the errors would not be comparable")
    n = min(int(n_samples), cfg["n_samples"], len(dataset))
    if n < 1:
        raise ValueError("n_samples must be >= 1")
    dev = _device_of(f, device)
    idx, x = next(_batches(dataset, n, n))
    x = _to_domain(x.to(dev), operator)
    y = measure(operator, x, noise, cfg["seed"], idx)  # the curve's measured data (same noise)
    x_norm2 = x.flatten(1).double().pow(2).sum(1).cpu().numpy()
    rows = []
    for eps in sorted(e for e in result.eps_grid if e > 0):
        key = "deviation" if cfg["target"] == "clean" else "sq_error"  # the attacked objective
        got = {r["sample"]: r[key] for r in result.rows
               if r["condition"] == "attack" and r["eps"] == eps and r["sample"] < n}
        default = np.array([got[i] for i in idx])
        with torch.no_grad(), eval_mode(f):
            out_shape = f(y[:1]).shape[1:]
        strong = pga_attack(f, y, x.reshape(-1, *out_shape), eps, settings,
                            generator=torch.Generator().manual_seed(_seed(settings.seed, 3, int(eps * 1e9))),
                            progress=progress)
        best = np.maximum(strong.error.cpu().numpy(), default)
        ratio = np.where(best > 0, default / np.where(best > 0, best, 1.0), 1.0)
        rows.append({"eps": eps, "n": n, "ratio_mean": float(ratio.mean()), "ratio_min": float(ratio.min()),
                     "relative_error_default": float(np.sqrt(default / x_norm2).mean()),
                     "relative_error_strong": float(np.sqrt(best / x_norm2).mean()),
                     "passes_default": cfg["steps"] * cfg["restarts"], "passes_strong": settings.steps * settings.restarts})
    return rows
