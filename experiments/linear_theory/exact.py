"""Exact errors of a linear reconstruction ``f(y) = B y`` on ``y = A x``, for the linear-theory experiment.

Notation: ``A`` is ``(m, n)``, ``B`` is ``(n, m)``, samples ``x`` are rows of ``X`` ``(N, n)``, eps is an
absolute l2 radius in measurement space (the theory of method.md section 5 uses absolute eps).

- clean error per sample: ``||B A x - x||^2``;
- per-sample worst case with target "truth": ``max_{||d|| <= eps} ||B (A x + d) - x||^2``. For fixed x this
  maximises a convex quadratic over a ball (a trust-region problem with a maximum): with
  ``r = (B A - I) x`` and ``B = P diag(sigma) R^T`` the maximiser is ``d = R z``,
  ``z_i = sigma_i a_i / (mu - sigma_i^2)``, ``a = P^T r``, where ``mu > sigma_1^2`` solves the secular
  equation ``sum_i sigma_i^2 a_i^2 / (mu - sigma_i^2)^2 = eps^2`` (the "hard case", ``a`` zero on the top
  singular space, is handled too). Solved here to float64 precision by bisection, vectorised over samples;
- the worst case of a perturbation shared by all samples (independent of x), in expectation over whitened
  x: ``||B A - I||_F^2 + eps^2 ||B||_2^2`` (the cross term vanishes because ``E x = 0``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["clean_errors", "worst_case_errors", "worst_case_perturbations", "shared_worst_case_expected",
           "per_sample_minmax_filter",
           "whitened_samples"]


def whitened_samples(N: int, n: int, seed: int) -> np.ndarray:
    """``N`` samples in R^n with empirical mean exactly 0 and empirical covariance exactly ``I`` (float64).

    Drawn from N(0, I) with ``numpy.random.default_rng(seed)``, then centred and whitened by the inverse
    square root of their sample covariance, so the empirical risk equals the population risk of
    method.md section 5 for any linear map. Needs ``N > n``.
    """
    if N <= n:
        raise ValueError(f"need more samples than dimensions to whiten, got N={N}, n={n}")
    X = np.random.default_rng(seed).standard_normal((N, n))
    X -= X.mean(0)
    C = X.T @ X / N
    w, V = np.linalg.eigh(C)
    return X @ (V / np.sqrt(w)) @ V.T


def clean_errors(B: np.ndarray, A: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``||B A x - x||^2`` per sample, shape ``(N,)``."""
    R = X @ (B @ A - np.eye(A.shape[1])).T
    return (R**2).sum(1)


def _secular(sigma: np.ndarray, a: np.ndarray, eps: float, iters: int = 200):
    """Solve ``sum_i sigma_i^2 a_i^2 / (mu - sigma_i^2)^2 = eps^2`` for ``mu > max sigma^2``, per row of a.

    Returns ``(z, hard)``: ``z`` ``(N, k)`` the maximiser in B's right-singular coordinates, ``hard`` the
    rows treated as the hard case.
    """
    s1 = sigma[0] ** 2
    top = sigma**2 >= s1 * (1 - 1e-12)
    sa = sigma * a  # (N, k)
    # phi(t), t = mu - s1 > 0, decreases from +inf (unless hard case) to 0. Bracket t in [lo, hi].
    norm_a = np.sqrt((a**2).sum(1))
    lo = np.full_like(norm_a, max(s1, 1e-300) * 1e-15)
    hi = np.maximum(sigma[0] * norm_a / eps * 1.01, 2 * lo)

    gap = s1 - sigma**2  # exactly 0 on the top singular space: no cancellation in t + gap

    def phi(t):
        den = t[:, None] + gap[None, :]
        safe = np.where(sa == 0, 1.0, den)
        return ((np.where(sa == 0, 0.0, sa / safe)) ** 2).sum(1)

    hard = phi(lo) < eps**2
    llo, lhi = np.log(lo), np.log(hi)
    for _ in range(iters):
        mid = 0.5 * (llo + lhi)
        big = phi(np.exp(mid)) > eps**2
        llo = np.where(big, mid, llo)
        lhi = np.where(big, lhi, mid)
    t = np.exp(0.5 * (llo + lhi))
    z = sa / (t[:, None] + gap[None, :])
    z *= eps / np.maximum(np.sqrt((z**2).sum(1, keepdims=True)), 1e-300)  # land exactly on the sphere
    if hard.any():
        # mu = sigma_1^2: the non-top part as in the generic formula, the remaining norm on the top space.
        zh = np.where(top[None, :], 0.0, sa[hard] / np.where(top, 1.0, gap)[None, :])
        rest = np.sqrt(np.maximum(eps**2 - (zh**2).sum(1), 0.0))
        first_top = int(np.argmax(top))
        zh[:, first_top] += rest
        z[hard] = zh
    return z, hard


def worst_case_perturbations(B: np.ndarray, A: np.ndarray, X: np.ndarray, eps: float) -> np.ndarray:
    """The exact maximiser ``d`` ``(N, m)`` of ``||B (A x + d) - x||^2`` over ``||d|| <= eps``, per sample."""
    if eps == 0:
        return np.zeros((X.shape[0], A.shape[0]))
    P, sigma, Rt = np.linalg.svd(B, full_matrices=True)  # B = P diag(sigma) Rt, P (n,n), Rt (m,m)
    k = sigma.size
    r = X @ (B @ A - np.eye(A.shape[1])).T  # (N, n)
    a = r @ P[:, :k]  # (N, k)
    z, _ = _secular(sigma, a, eps)
    return z @ Rt[:k, :]


def worst_case_errors(B: np.ndarray, A: np.ndarray, X: np.ndarray, eps: float) -> np.ndarray:
    """``max_{||d|| <= eps} ||B (A x + d) - x||^2`` per sample, exactly (float64), shape ``(N,)``."""
    d = worst_case_perturbations(B, A, X, eps)
    R = X @ (B @ A - np.eye(A.shape[1])).T + d @ B.T
    return (R**2).sum(1)


def shared_worst_case_expected(B: np.ndarray, A: np.ndarray, eps: float) -> float:
    """``E_x max_{||d|| <= eps, d independent of x} ||B (A x + d) - x||^2 = ||BA - I||_F^2 + eps^2 ||B||_2^2``."""
    E = B @ A - np.eye(A.shape[1])
    return float((E**2).sum() + eps**2 * np.linalg.norm(B, 2) ** 2)


def per_sample_minmax_filter(s: np.ndarray, eps: float, lam: float, X: np.ndarray, *, q0: np.ndarray | None = None,
                             max_iter: int = 500) -> np.ndarray:
    """Numerical minimiser of the per-sample min-max objective over diagonal filters ``q``.

    ``min_q mean_k [ ||(Q S - I) x_k||^2 + lam max_{||d|| <= eps} ||(Q S - I) x_k + Q d||^2 ]`` for
    ``A = diag(s)`` (any ``A = U diag(s) V^T`` reduces to it for whitened data; the objective is convex
    and invariant under sign flips of coordinates, so a diagonal minimiser exists). The inner maximum is
    solved exactly (:func:`worst_case_perturbations`); the gradient follows Danskin's theorem; L-BFGS-B.
    This is the target of an adversary that depends on the sample (``minmax`` with G, ``pgd``), whereas
    ``ctrobust.attacks.linear_theory.minmax_linear_solution`` is the target of the shared perturbation.
    """
    from scipy.optimize import minimize

    s = np.asarray(s, dtype=np.float64)
    A = np.diag(s)

    def fun(q):
        B = np.diag(q)
        R = X * (q * s - 1.0)
        D = worst_case_perturbations(B, A, X, eps)
        P = R + D * q
        value = np.mean((R**2).sum(1) + lam * (P**2).sum(1))
        grad = np.mean(2 * R * (X * s) + lam * 2 * P * (X * s + D), axis=0)
        return value, grad

    q0 = 1.0 / s if q0 is None else np.asarray(q0, dtype=np.float64)
    res = minimize(fun, q0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x
