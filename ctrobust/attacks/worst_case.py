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
from scipy.linalg import eigh_tridiagonal

from ctrobust.attacks.ball import random_unit_directions
from ctrobust.attacks.linear_theory import trust_region_max

__all__ = ["WorstCase", "linearized_worst_case", "jacobian_norm", "exact_worst_case", "is_linear", "default_budget",
           "LINEAR_BUDGET", "NETWORK_BUDGET"]


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
        Whether every value changed by less than ``tol`` (relative) since the check five iterations
        earlier (or an invariant subspace, or the whole space, was reached).
    """

    delta: torch.Tensor
    predicted: torch.Tensor
    jacobian_norm: torch.Tensor
    clean: torch.Tensor
    iterations: int
    converged: bool


def _linearization(f, y: torch.Tensor, linear: bool = False):
    """``(f(y), jvp, vjp)`` with ``jvp(v) = J v`` and ``vjp(w) = J^T w`` at ``y`` (one graph, reused).

    For a linear ``f`` (``linear=True``) ``J v = f(v)``: one forward pass instead of differentiating
    the vector-Jacobian product once more (about three times cheaper for FBP).
    """
    y_req = y.detach().requires_grad_(True)
    with torch.enable_grad():
        out = f(y_req)
        if linear:
            jt_u = u = None
        else:
            u = torch.zeros_like(out, requires_grad=True)
            (jt_u,) = torch.autograd.grad(out, y_req, u, create_graph=True)

    def vjp(w: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return torch.autograd.grad(out, y_req, w, retain_graph=True)[0].detach()

    def jvp(v: torch.Tensor) -> torch.Tensor:
        if linear:
            with torch.no_grad():
                return f(v).detach()
        with torch.enable_grad():
            if not jt_u.requires_grad:  # J^T u does not depend on u: J = 0
                return torch.zeros_like(out)
            return torch.autograd.grad(jt_u, u, v, retain_graph=True)[0].detach()

    return out.detach(), jvp, vjp


def _unit_rows(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = v.flatten(1).norm(dim=1)
    return v / n.clamp_min(torch.finfo(v.dtype).tiny).reshape(-1, *([1] * (v.dim() - 1))), n


def _eig_tridiagonal(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and vectors of the symmetric tridiagonal matrix with diagonal ``alpha`` (k,) and
    off-diagonal ``beta`` (k - 1,) (LAPACK's tridiagonal solver, O(k^2) rather than a dense O(k^3) one)."""
    if alpha.size == 1:
        return alpha.astype(np.float64), np.ones((1, 1))
    return eigh_tridiagonal(alpha, beta)


def _solve(alphas: np.ndarray, betas: np.ndarray, gnorm: np.ndarray, radii: np.ndarray):
    """Per sample, the trust-region maximiser in the Krylov basis for each radius: ``(E, B, k)`` coefficients,
    their ``theta``-quadratic values ``(E, B)``, and the top Ritz value ``(B,)``.

    ``alphas`` ``(B, k)`` and ``betas`` ``(B, k - 1)`` are the Lanczos coefficients (the tridiagonal ``T``)."""
    E, (B, k) = radii.shape[0], alphas.shape
    coeff = np.zeros((E, B, k))
    gain = np.zeros((E, B))
    top = np.zeros(B)
    for b in range(B):
        theta, P = _eig_tridiagonal(alphas[b], betas[b])
        theta = np.clip(theta, 0.0, None)  # J^T J is positive semi-definite: drop rounding noise
        top[b] = theta.max() if theta.size else 0.0
        c = gnorm[b] * P[0]  # J^T r = ||J^T r|| q_1 in the Krylov basis
        for e in range(E):
            a = trust_region_max(theta, c, float(radii[e, b]))
            coeff[e, b] = P @ a
            gain[e, b] = float(np.sum(theta * a**2) + 2 * np.dot(c, a))
    return coeff, gain, top


#: Lanczos budgets ``(max_iterations, tol)`` of the linearisation: for a linear reconstruction (FBP) the
#: worst case is exact once converged, and an iteration costs one forward and one backward pass; for a
#: network each iteration costs about three backward passes (``J v`` by double backward), and the
#: first-order prediction and ``||J||_2`` need only a few digits.
LINEAR_BUDGET = (300, 1e-6)
NETWORK_BUDGET = (30, 1e-3)
#: iterations between convergence checks (each check solves the small trust-region problems)
CHECK_EVERY = 5
_BLOCK = 16  # Krylov vectors per storage block (no copy of the whole basis as it grows)


def default_budget(f) -> tuple[int, float]:
    """``(max_iterations, tol)`` of the linearisation of ``f``: :data:`LINEAR_BUDGET` for a linear
    reconstruction, :data:`NETWORK_BUDGET` otherwise."""
    return LINEAR_BUDGET if is_linear(f) else NETWORK_BUDGET


class _Basis:
    """The Lanczos vectors, stored per sample in blocks ``(B, 16, d)`` (appending never copies the whole
    basis, the projections are batched matrix products, and nothing is kept in float64)."""

    def __init__(self):
        self.blocks: list[torch.Tensor] = []
        self.k = 0

    def append(self, q: torch.Tensor) -> None:
        i = self.k % _BLOCK
        if i == 0:
            self.blocks.append(q.new_empty((q.shape[0], _BLOCK, q.shape[1])))
        self.blocks[-1][:, i] = q
        self.k += 1

    def last(self, back: int = 1) -> torch.Tensor:
        j = self.k - back
        return self.blocks[j // _BLOCK][:, j % _BLOCK]

    def _views(self, k: int | None = None):
        k = self.k if k is None else k
        for i, block in enumerate(self.blocks):
            n = min(_BLOCK, k - i * _BLOCK)
            if n <= 0:
                break
            yield i * _BLOCK, block[:, :n]

    def orthogonalize(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` ``(B, d)`` minus its projection on the span, per sample, block by block."""
        w = w[:, :, None]
        for _, Q in self._views():
            w = w - torch.bmm(Q.transpose(1, 2), torch.bmm(Q, w))
        return w[:, :, 0]

    def combine(self, coeff: np.ndarray, k: int) -> torch.Tensor:
        """``sum_j coeff[e, b, j] q_j[b]`` for the first ``k`` vectors, accumulated in float64: ``(E, B, d)``."""
        first = self.blocks[0]
        out = torch.zeros((coeff.shape[0], first.shape[0], first.shape[2]), dtype=torch.float64, device=first.device)
        C = torch.as_tensor(coeff, dtype=torch.float64, device=first.device)
        for start, Q in self._views(k):
            out += torch.einsum("ebk,bkd->ebd", C[:, :, start:start + Q.shape[1]], Q.double())
        return out


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
    linear: bool | None = None,
    callback: Callable[[int, float], None] | None = None,
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
        Bounds on the Lanczos iterations. An iteration costs one ``J v`` and one ``J^T w``: for a network
        about three backward passes of ``f`` (``J v`` by double backward), for a linear ``f`` one forward
        and one backward pass. ``max_iterations`` >= the number of entries of a sample's ``y`` solves
        the problem exactly. :func:`default_budget` gives the budgets ``robustness_curve`` uses.
    tol : float
        Stop when every predicted value and Jacobian norm changed by less than this (relative) over
        the last :data:`CHECK_EVERY` (5) iterations (checked every 5 iterations).
    seed : int
        Seed of the random start used when ``J^T r = 0`` (the deviation target).
    linear : bool, optional
        Whether ``f`` is linear (then ``J v = f(v)``, one forward pass); default :func:`is_linear`.
    callback : callable, optional
        ``callback(iterations, change)`` after every iteration (for progress): ``change`` is the largest
        relative change at the last check (``nan`` before the first), to compare with ``tol``.

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
    linear = is_linear(f) if linear is None else bool(linear)
    out, jvp, vjp = _linearization(f, y, linear)
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
    del g, r
    gnorm_np = gnorm.double().cpu().numpy()
    radii_np = rad.numpy()
    dim = y[0].numel()
    kmax = int(min(max_iterations, dim))
    basis = _Basis()
    basis.append(q.flatten(1))
    alphas: list[np.ndarray] = []
    betas: list[np.ndarray] = []
    converged = False
    last_check: np.ndarray | None = None
    change = math.nan
    iterations = 0
    for j in range(kmax):
        qj = basis.last()
        w = vjp(jvp(qj.reshape(y.shape))).flatten(1)
        alpha = (w * qj).sum(1)
        w = w - alpha[:, None] * qj
        if j > 0:
            w = w - torch.as_tensor(betas[-1], dtype=w.dtype, device=w.device)[:, None] * basis.last(2)
        for _ in range(2):  # full re-orthogonalisation, twice
            w = basis.orthogonalize(w)
        alphas.append(alpha.double().cpu().numpy())
        beta = w.norm(dim=1)
        iterations = j + 1
        if iterations % CHECK_EVERY == 0 or iterations == kmax:
            _, gain, top = _solve(*_coefficients(alphas, betas), gnorm_np, radii_np)
            values = np.concatenate([gain.ravel(), top])
            if last_check is not None:
                change = float(np.max(np.abs(values - last_check) / np.maximum(np.abs(values), 1e-300)))
                if iterations >= min_iterations and change <= tol:
                    converged = True
            last_check = values
        if callback is not None:
            callback(iterations, change)
        if converged:
            break
        bscale = alpha.abs().clamp_min(torch.finfo(w.dtype).tiny)
        dead = beta <= 1e2 * torch.finfo(w.dtype).eps * bscale  # invariant subspace reached for that sample
        if bool(dead.all()):
            converged = True
            break
        if iterations == kmax:
            break
        betas.append(torch.where(dead, torch.zeros_like(beta), beta).double().cpu().numpy())
        nxt = torch.where(dead[:, None], torch.zeros_like(w), w / beta.clamp_min(torch.finfo(w.dtype).tiny)[:, None])
        basis.append(nxt)
    if iterations == dim:
        converged = True
    coeff, gain, top = _solve(*_coefficients(alphas, betas[: iterations - 1]), gnorm_np, radii_np)
    delta = basis.combine(coeff, iterations).to(y.dtype).reshape(rad.shape[0], *y.shape)
    predicted = clean[None, :] + torch.as_tensor(gain)
    return WorstCase(delta, predicted, torch.as_tensor(np.sqrt(top)), clean, iterations, converged)


def _coefficients(alphas: list[np.ndarray], betas: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The tridiagonal ``T`` per sample: diagonal ``(B, k)`` and off-diagonal ``(B, k - 1)``."""
    a = np.stack(alphas, axis=1)
    B, k = a.shape
    bb = np.stack(betas[: k - 1], axis=1) if k > 1 else np.zeros((B, 0))
    return a, bb


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
