"""Worst cases without an attack: exact ones for linear reconstructions, first-order ones for networks.

For a reconstruction ``f`` and measurements ``y`` let ``J = J_f(y)`` be its Jacobian (for a linear
``f``, FBP, ``A^+`` or ``f(y) = B y``, the map itself) and ``r = f(y) - ref`` the clean residual
(``ref`` the truth ``x``, or ``f(y)`` for the deviation target, which makes ``r = 0``). Linearising,

``max_{||d||_2 <= rho} ||r + J d||_2^2``

is a trust-region problem with a convex objective: its maximiser lies on the sphere, and with the
eigen-decomposition ``J^T J = sum_i theta_i z_i z_i^T`` it is ``d = sum_i a_i z_i`` with
``a_i = c_i / (nu - theta_i)``, ``c = Z^T J^T r``, ``nu >= theta_max`` chosen so ``||a|| = rho``
(:func:`ctrobust.attacks.linear_theory.trust_region_max`). For the deviation target it is ``rho^2 ||J||_2^2``.
For a linear ``f`` this *is* the worst case, exactly; for a network it is the first-order prediction,
and ``rho ||J_f(y)||_2`` is the local amplification of a perturbation of norm ``rho``.

Everything here is matrix-free: ``J v`` and ``J^T w`` come from autograd (``J^T w`` a vector-Jacobian
product, ``J v`` by differentiating that product once more, which needs only first-order derivatives
of custom autograd functions such as the Radon transform's), and the problem is solved on a Krylov
space of ``J^T J`` started at ``J^T r`` (Lanczos with full re-orthogonalisation, the GLTR method of
Gould et al. 1999). The Krylov solution is feasible, so its value is always attained (a certified
lower bound); it converges to the maximum as the space grows, and iterations stop when the values of
every radius asked for change by less than ``tol`` relative.

Conventions: ``y`` is a batch ``(B, 1, A, D)`` or ``(B, m)``; samples must not interact (``f`` in eval
mode); radii are absolute l2 norms per sample, ``(B,)`` (``eps * ||y_b||_2`` for the project's
relative eps); squared errors are summed over all pixels, as in :mod:`ctrobust.attacks`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
import torch

from ctrobust.attacks.ball import random_unit_directions
from ctrobust.attacks.linear_theory import trust_region_max

__all__ = ["WorstCase", "linearized_worst_case", "jacobian_norm", "exact_worst_case", "is_linear"]


def is_linear(f) -> bool:
    """True when ``f`` declares itself linear in the measurements (``f.is_linear``; FBP, ``B y``)."""
    return bool(getattr(f, "is_linear", False))


@dataclasses.dataclass
class WorstCase:
    """Worst cases of the linearised problem for each radius asked for.

    Attributes
    ----------
    delta : Tensor
        ``(E, B, ...)``: per radius ``E`` and sample, the maximiser ``d`` (shaped like ``y``), on the sphere.
    predicted : Tensor
        float64 ``(E, B)``: ``||r + J d||^2`` (exact for a linear ``f``, first order otherwise).
    jacobian_norm : Tensor
        float64 ``(B,)``: ``||J_f(y)||_2``, the largest singular value found on the Krylov space (a
        lower bound that is exact once converged).
    clean : Tensor
        float64 ``(B,)``: ``||r||^2``, the clean squared error.
    iterations : int
        Lanczos iterations run (one ``J v`` and one ``J^T w`` each).
    converged : bool
        Whether every value changed by less than ``tol`` (relative) over the last check.
    """

    delta: torch.Tensor
    predicted: torch.Tensor
    jacobian_norm: torch.Tensor
    clean: torch.Tensor
    iterations: int
    converged: bool


def _linearization(f, y: torch.Tensor):
    """``(f(y), jvp, vjp)`` with ``jvp(v) = J v`` and ``vjp(w) = J^T w`` at ``y`` (one graph, reused)."""
    y_req = y.detach().requires_grad_(True)
    with torch.enable_grad():
        out = f(y_req)
        u = torch.zeros_like(out, requires_grad=True)
        (jt_u,) = torch.autograd.grad(out, y_req, u, create_graph=True)

    def vjp(w: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return torch.autograd.grad(out, y_req, w, retain_graph=True)[0].detach()

    def jvp(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            if not jt_u.requires_grad:  # J^T u does not depend on u: J = 0
                return torch.zeros_like(out)
            return torch.autograd.grad(jt_u, u, v, retain_graph=True)[0].detach()

    return out.detach(), jvp, vjp


def _unit_rows(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = v.flatten(1).norm(dim=1)
    return v / n.clamp_min(torch.finfo(v.dtype).tiny).reshape(-1, *([1] * (v.dim() - 1))), n


def _solve(T: np.ndarray, gnorm: np.ndarray, radii: np.ndarray):
    """Per sample, the trust-region maximiser in the Krylov basis for each radius: ``(E, B, k)`` coefficients,
    their ``theta``-quadratic values ``(E, B)``, and the top Ritz value ``(B,)``."""
    E, B, k = radii.shape[0], T.shape[0], T.shape[1]
    coeff = np.zeros((E, B, k))
    gain = np.zeros((E, B))
    top = np.zeros(B)
    for b in range(B):
        theta, P = np.linalg.eigh(T[b])
        theta = np.clip(theta, 0.0, None)  # J^T J is positive semi-definite: drop rounding noise
        top[b] = theta.max() if theta.size else 0.0
        c = gnorm[b] * P[0]  # J^T r = ||J^T r|| q_1 in the Krylov basis
        for e in range(E):
            a = trust_region_max(theta, c, float(radii[e, b]))
            coeff[e, b] = P @ a
            gain[e, b] = float(np.sum(theta * a**2) + 2 * np.dot(c, a))
    return coeff, gain, top


def linearized_worst_case(
    f: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    reference: torch.Tensor | None,
    radii: torch.Tensor | Sequence[torch.Tensor],
    *,
    max_iterations: int = 100,
    min_iterations: int = 5,
    tol: float = 1e-6,
    seed: int = 0,
) -> WorstCase:
    """Solve ``max_{||d_b|| <= rho_b} ||r_b + J_b d_b||^2`` per sample for every radius, matrix-free.

    Parameters
    ----------
    f : callable
        Differentiable ``y -> image`` whose samples do not interact (put an ``nn.Module`` in eval mode).
    y : Tensor
        Measurements ``(B, 1, A, D)`` or ``(B, m)`` at which ``f`` is linearised.
    reference : Tensor or None
        ``ref`` shaped like ``f(y)`` (the truth images); ``None`` means ``ref = f(y)``: the deviation
        target, ``r = 0``, whose worst case is ``rho^2 ||J||_2^2``.
    radii : Tensor ``(E, B)`` or ``(B,)``, or a sequence of ``(B,)`` tensors
        Absolute l2 radii per sample (units of ``y``).
    max_iterations, min_iterations : int
        Bounds on the Lanczos iterations (each one ``J v`` and one ``J^T w``, i.e. about three passes
        of ``f``'s backward). ``max_iterations`` >= the number of entries of a sample's ``y`` solves
        the problem exactly.
    tol : float
        Stop when every predicted value and Jacobian norm changed by less than this (relative) over
        the last five iterations.
    seed : int
        Seed of the random start used when ``J^T r = 0`` (the deviation target).

    Returns
    -------
    WorstCase
    """
    y = y.detach()
    if isinstance(radii, torch.Tensor):
        rad = radii.detach().double().cpu().reshape(-1, y.shape[0])
    else:
        rad = torch.stack([torch.as_tensor(r).double().cpu().reshape(y.shape[0]) for r in radii])
    if not torch.isfinite(rad).all() or bool((rad < 0).any()):
        raise ValueError("radii must be finite and >= 0")
    out, jvp, vjp = _linearization(f, y)
    B = y.shape[0]
    r = torch.zeros_like(out) if reference is None else out - reference.detach().to(out.device, out.dtype)
    clean = r.flatten(1).double().pow(2).sum(1).cpu()
    g = vjp(r)
    q, gnorm = _unit_rows(g)
    scale = g.flatten(1).abs().amax(1)
    # no linear term (deviation target, or f(y) = ref): start at a random unit vector instead
    empty = (gnorm <= 1e-12 * scale.clamp_min(1e-300)) | (gnorm == 0)
    if bool(empty.any()):
        gen = torch.Generator().manual_seed(int(seed))
        zq = random_unit_directions(y.shape, gen, dtype=y.dtype, device=y.device)
        q = torch.where(empty.reshape(-1, *([1] * (y.dim() - 1))), zq, q)
        gnorm = torch.where(empty, torch.zeros_like(gnorm), gnorm)
    gnorm_np = gnorm.double().cpu().numpy()
    dim = y[0].numel()
    kmax = int(min(max_iterations, dim))
    basis = [q.flatten(1)]
    alphas: list[np.ndarray] = []
    betas: list[np.ndarray] = []
    prev = None
    converged = False
    checks: list[np.ndarray] = []
    iterations = 0
    for j in range(kmax):
        qj = basis[-1]
        w = vjp(jvp(qj.reshape(y.shape))).flatten(1)
        alpha = (w * qj).sum(1)
        w = w - alpha[:, None] * qj
        if j > 0:
            w = w - torch.as_tensor(betas[-1], dtype=w.dtype, device=w.device)[:, None] * basis[-2]
        Q = torch.stack(basis)  # (j + 1, B, d): full re-orthogonalisation, twice
        for _ in range(2):
            w = w - torch.einsum("jb,jbd->bd", torch.einsum("bd,jbd->jb", w, Q), Q)
        alphas.append(alpha.double().cpu().numpy())
        beta = w.norm(dim=1)
        iterations = j + 1
        T = _tridiagonal(alphas, betas)
        _, gain, top = _solve(T, gnorm_np, rad.numpy())
        checks.append(np.concatenate([gain.ravel(), top]))
        if iterations >= min_iterations and len(checks) > 5:
            old, new = checks[-6], checks[-1]
            if np.all(np.abs(new - old) <= tol * np.maximum(np.abs(new), 1e-300)):
                converged = True
                break
        bscale = alpha.abs().clamp_min(torch.finfo(w.dtype).tiny)
        dead = beta <= 1e2 * torch.finfo(w.dtype).eps * bscale  # invariant subspace reached for that sample
        if bool(dead.all()):
            converged = True
            break
        betas.append(torch.where(dead, torch.zeros_like(beta), beta).double().cpu().numpy())
        nxt = torch.where(dead[:, None], torch.zeros_like(w), w / beta.clamp_min(torch.finfo(w.dtype).tiny)[:, None])
        basis.append(nxt)
    if iterations == dim:
        converged = True
    T = _tridiagonal(alphas, betas[: iterations - 1])
    coeff, gain, top = _solve(T, gnorm_np, rad.numpy())
    Q = torch.stack(basis[:iterations]).double()  # (k, B, d)
    C = torch.as_tensor(coeff, dtype=torch.float64, device=Q.device)  # (E, B, k)
    delta = torch.einsum("ebk,kbd->ebd", C, Q).to(y.dtype).reshape(rad.shape[0], *y.shape)
    predicted = clean[None, :] + torch.as_tensor(gain)
    return WorstCase(delta, predicted, torch.as_tensor(np.sqrt(top)), clean, iterations, converged)


def _tridiagonal(alphas: list[np.ndarray], betas: list[np.ndarray]) -> np.ndarray:
    a = np.stack(alphas, axis=1)  # (B, k)
    B, k = a.shape
    T = np.zeros((B, k, k))
    idx = np.arange(k)
    T[:, idx, idx] = a
    if k > 1:
        bb = np.stack(betas[: k - 1], axis=1)
        T[:, idx[:-1], idx[1:]] = bb
        T[:, idx[1:], idx[:-1]] = bb
    return T


def jacobian_norm(f: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, *, max_iterations: int = 30,
                  tol: float = 1e-4, seed: int = 0) -> torch.Tensor:
    """``||J_f(y_b)||_2`` per sample, float64 ``(B,)``: the local amplification of a perturbation's norm.

    By Lanczos on ``J^T J`` from a random start (a lower bound that converges from below; exact
    for a linear map once ``max_iterations`` reaches its rank). ``rho * ||J_f(y)||_2`` is the
    first-order change of ``f`` under the worst perturbation of norm ``rho``.
    ``f`` must not mix samples (an ``nn.Module`` in eval mode).
    """
    from ctrobust.attacks import eval_mode

    zero = torch.zeros(y.shape[0], dtype=torch.float64)
    with eval_mode(f):
        wc = linearized_worst_case(f, y, None, zero, max_iterations=max_iterations, tol=tol, seed=seed)
    return wc.jacobian_norm


def exact_worst_case(f, y: torch.Tensor, x: torch.Tensor | None, radius: torch.Tensor, *,
                     max_iterations: int = 300, tol: float = 1e-8):
    """The worst case of a *linear* reconstruction ``f``: ``(delta, error)`` per sample.

    ``error`` (float64 ``(B,)``) is ``||f(y + delta) - ref||^2`` evaluated at the returned ``delta``
    (``ref = x``, or ``f(y)`` when ``x`` is None), so it is attained; it equals the maximum over the
    ball of ``radius`` once the Krylov space has converged (:func:`linearized_worst_case`).
    Refuses an ``f`` that does not declare ``is_linear``.
    """
    from ctrobust.attacks import eval_mode, squared_error

    if not is_linear(f):
        raise ValueError(f"{type(f).__name__} is not a linear reconstruction (no is_linear = True); "
                         "use linearized_worst_case for a first-order prediction")
    with eval_mode(f):
        wc = linearized_worst_case(f, y, x, radius, max_iterations=max_iterations, tol=tol)
        delta = wc.delta[0]
        with torch.no_grad():
            out = f(y + delta)
            ref = f(y) if x is None else x
            err = squared_error(out.double(), ref.double().reshape(out.shape))
    return delta, err.cpu()
