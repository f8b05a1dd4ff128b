"""The linear case of min-max training in closed form (docs/method.md section 5; docs/theory.md).

Setting: whitened data (``E x = 0``, ``E x x^T = I``), noiseless measurements ``y = A x`` with
``A`` of shape ``(m, n)``, a linear reconstruction ``f(y) = B y`` with ``B`` of shape ``(n, m)``, and
an adversarial perturbation ``delta`` of l2 norm ``<= eps`` (absolute, in measurement units) that
does not depend on ``x`` (the perturbation shared by a batch). Then

``max_delta E [ ||B A x - x||^2 + lam ||B (A x + delta) - x||^2 ]
   = (1 + lam) ||B A - I||_F^2 + lam eps^2 ||B||_2^2 =: J(B)``

(the cross term vanishes because ``E x = 0``). With ``A = U diag(s) V^T`` (thin SVD, ``r = min(m, n)``)
the minimiser is ``B = V diag(q) U^T`` with the clipped inverse

``q_i = min(1 / s_i, c)``,  ``c = sum_{i in K} s_i / (sum_{i in K} s_i^2 + lam eps^2 / (1 + lam))``,

``K = {i : s_i < 1 / c}`` the ``k`` smallest singular values (``s_i = 0`` gives ``q_i = 0``). It is
the unique minimiser when ``lam eps^2 > 0``; ``eps = 0`` or ``lam = 0`` gives the pseudo-inverse
(``k = 0``). docs/theory.md derives it and the tests check it against direct numerical minimisation.

Conventions: ``A`` is an ``(m, n)`` array / tensor or a ctrobust CS operator (``to_dense()``), ``B``
an ``(n, m)`` array / tensor; vectorised images ``x`` are ``(K, n)``; ``eps`` is absolute here (for the
project's relative eps use ``eps * ||A x||_2`` per sample). Errors are squared l2 norms, summed
over the ``n`` entries (not averaged).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "minmax_linear_solution",
    "minmax_objective",
    "minmax_matrix_objective",
    "minmax_linear_operator",
    "singular_value_filter",
    "clean_error",
    "worst_case_deviation",
    "worst_case_error",
    "worst_case_perturbation",
    "trust_region_max",
]


# --------------------------------------------------------------------------------------------------
# input helpers
# --------------------------------------------------------------------------------------------------
def _nonneg(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return v


def _spectrum(singular_values: Any) -> np.ndarray:
    if isinstance(singular_values, torch.Tensor):
        singular_values = singular_values.detach().cpu().numpy()
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"singular_values must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("singular_values must be finite and non-negative")
    return s


def _matrix(A: Any, name: str = "A") -> np.ndarray:
    """A dense float64 numpy matrix from an array, a tensor or a ctrobust operator."""
    if hasattr(A, "to_dense"):
        A = A.to_dense()
    elif hasattr(A, "domain_shape") and hasattr(A, "forward"):
        if len(A.domain_shape) != 1 or len(A.range_shape) != 1:
            raise ValueError(f"{name}: only operators on vectors (B, n) -> (B, m) have a matrix here")
        with torch.no_grad():
            eye = torch.eye(A.domain_shape[0], dtype=torch.float64)
            A = A.forward(eye).T
    if isinstance(A, torch.Tensor):
        A = A.detach().cpu().numpy()
    M = np.asarray(A, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} has non-finite entries")
    return M


# --------------------------------------------------------------------------------------------------
# the closed form
# --------------------------------------------------------------------------------------------------
def minmax_linear_solution(singular_values: Any, eps: float, lam: float) -> tuple[np.ndarray, int]:
    """The min-max optimal singular-value filter ``q`` and the number ``k`` of clipped values.

    Minimises ``J(q) = (1 + lam) sum_i (q_i s_i - 1)^2 + lam eps^2 max_i q_i^2`` exactly:
    ``q_i = min(1/s_i, c)`` with the common level ``c`` of the module docstring.

    Parameters
    ----------
    singular_values : array_like, shape (r,)
        Non-negative singular values ``s`` of ``A``, in any order.
    eps : float
        Absolute l2 radius of the measurement perturbation (>= 0).
    lam : float
        Weight of the adversarial term (>= 0).

    Returns
    -------
    q : numpy.ndarray, shape (r,), float64
        Filtered inverse singular values, in the order of the input (``q_i = 0`` where ``s_i = 0``).
    k : int
        How many positive singular values are clipped (``q_i = c < 1/s_i``): the ``k`` smallest.
        0 when ``lam * eps == 0`` (the pseudo-inverse), at least 1 otherwise.

    Examples
    --------
    >>> q, k = minmax_linear_solution([1.0, 0.5, 0.01], eps=0.05, lam=1.0)
    >>> k, q.round(4).tolist()  # 1/0.01 = 100 clipped to c = 0.01 / (0.01**2 + 0.05**2 / 2)
    (1, [1.0, 2.0, 7.4074])
    >>> q, k = minmax_linear_solution([1.0, 0.5, 0.01], eps=0.1, lam=1.0)  # larger eps clips more
    >>> k, q.round(4).tolist()
    (2, [1.0, 1.9992, 1.9992])
    """
    s = _spectrum(singular_values)
    eps = _nonneg(eps, "eps")
    lam = _nonneg(lam, "lam")
    q = np.zeros_like(s)
    positive = s > 0
    mu = lam * eps**2 / (1.0 + lam)
    if mu == 0.0:
        q[positive] = 1.0 / s[positive]
        return q, 0
    sp = np.sort(s[positive])  # ascending
    if sp.size == 0:
        return q, 0
    s1 = np.concatenate([[0.0], np.cumsum(sp)])  # s1[j] = sum of the j smallest
    s2 = np.concatenate([[0.0], np.cumsum(sp**2)])
    # g(t) = sum_i (1 - t s_i)_+^2 + mu t^2 is convex in the clip level t; its derivative at the
    # breakpoint t_j = 1/s_j has the sign of  mu - (s_j * S1_{<j} - S2_{<j}),  positive for the first
    # k breakpoints (the largest t) only. The minimiser lies in [1/s_{k+1}, 1/s_k).
    slope_sign = mu - (sp * s1[:-1] - s2[:-1])
    k = int(np.count_nonzero(slope_sign > 0))
    c = s1[k] / (s2[k] + mu)
    q[positive] = np.minimum(1.0 / s[positive], c)
    return q, k


def minmax_objective(q: Any, singular_values: Any, eps: float, lam: float) -> float:
    """``J(q) = (1 + lam) sum_i (q_i s_i - 1)^2 + lam eps^2 max_i q_i^2`` (float).

    Equals :func:`minmax_matrix_objective` of ``B = V diag(q) U^T`` minus the constant
    ``(1 + lam) (n - r)`` from the ``n - r`` directions that ``A`` cannot see.
    """
    s = _spectrum(singular_values)
    q = np.asarray(q.detach().cpu().numpy() if isinstance(q, torch.Tensor) else q, dtype=np.float64)
    if q.shape != s.shape:
        raise ValueError(f"q has shape {q.shape} but singular_values has shape {s.shape}")
    eps = _nonneg(eps, "eps")
    lam = _nonneg(lam, "lam")
    return float((1 + lam) * np.sum((q * s - 1.0) ** 2) + lam * eps**2 * np.max(q**2))


def minmax_matrix_objective(B: Any, A: Any, eps: float, lam: float) -> float:
    """``J(B) = (1 + lam) ||B A - I||_F^2 + lam eps^2 ||B||_2^2`` for ``B (n, m)`` and ``A (m, n)``.

    The worst case over shared perturbations ``||delta|| <= eps`` of the min-max objective
    ``E ||B A x - x||^2 + lam E ||B (A x + delta) - x||^2`` on whitened data (exact).
    """
    A = _matrix(A)
    B = _matrix(B, "B")
    _check_pair(B, A)
    eps = _nonneg(eps, "eps")
    lam = _nonneg(lam, "lam")
    return (1 + lam) * clean_error(B, A) + lam * eps**2 * float(np.linalg.norm(B, 2)) ** 2


def _check_pair(B: np.ndarray, A: np.ndarray) -> None:
    if B.shape != (A.shape[1], A.shape[0]):
        raise ValueError(
            f"B must have shape (n, m) = {(A.shape[1], A.shape[0])} for A of shape {A.shape}, got {B.shape}"
        )


def _thin_svd(A: np.ndarray, rcond: float | None):
    u, s, vh = np.linalg.svd(A, full_matrices=False)
    cutoff = (max(A.shape) * np.finfo(np.float64).eps if rcond is None else rcond) * (s[0] if s.size else 0.0)
    s = np.where(s > cutoff, s, 0.0)
    return u, s, vh


def minmax_linear_operator(A: Any, eps: float, lam: float, *, rcond: float | None = None) -> torch.Tensor:
    """The min-max optimal linear reconstruction ``B = V diag(q) U^T``: float64 tensor ``(n, m)``.

    Parameters
    ----------
    A : array_like or torch.Tensor, shape (m, n), or a ctrobust CS operator
        The measurement matrix (operators are densified with ``to_dense()``).
    eps, lam : float
        As in :func:`minmax_linear_solution` (eps absolute, in measurement units).
    rcond : float, optional
        Singular values ``<= rcond * sigma_max`` are treated as exactly zero (``q = 0``); default
        ``max(m, n) * 2.2e-16`` (numpy's ``pinv`` convention). ``eps = 0`` gives ``pinv(A)``.
    """
    M = _matrix(A)
    u, s, vh = _thin_svd(M, rcond)
    q, _ = minmax_linear_solution(s, eps, lam)
    return torch.from_numpy((vh.T * q) @ u.T)


def singular_value_filter(B: Any, A: Any) -> tuple[np.ndarray, float]:
    """Read a (learned) ``B`` in the singular basis of ``A``: ``M = V^T B U`` (``r x r``).

    Returns
    -------
    q : numpy.ndarray, shape (r,)
        ``diag(M)``, aligned with ``A``'s singular values in descending order (numpy's SVD order).
    offdiag : float
        ``||M - diag(q)||_F / ||M||_F``, how far ``B`` is from the ``V Q U^T`` form.
    """
    A = _matrix(A)
    B = _matrix(B, "B")
    _check_pair(B, A)
    u, _, vh = np.linalg.svd(A, full_matrices=False)
    M = vh @ B @ u
    q = np.diag(M).copy()
    total = np.linalg.norm(M)
    off = float(np.linalg.norm(M - np.diag(q)) / total) if total > 0 else 0.0
    return q, off


# --------------------------------------------------------------------------------------------------
# errors of a linear reconstruction
# --------------------------------------------------------------------------------------------------
def clean_error(B: Any, A: Any) -> float:
    """``E ||B A x - x||^2 = ||B A - I||_F^2`` on whitened data (exact)."""
    A = _matrix(A)
    B = _matrix(B, "B")
    _check_pair(B, A)
    return float(np.linalg.norm(B @ A - np.eye(A.shape[1]), "fro") ** 2)


def worst_case_deviation(B: Any, eps: float) -> float:
    """``max_{||delta|| <= eps} ||B (y + delta) - B y||^2 = eps^2 sigma_max(B)^2`` (exact, any y)."""
    B = _matrix(B, "B")
    eps = _nonneg(eps, "eps")
    return eps**2 * float(np.linalg.norm(B, 2)) ** 2


def worst_case_error(B: Any, A: Any, eps: float, x: Any = None) -> float | np.ndarray:
    """Exact worst-case squared error of ``f(y) = B y`` under ``||delta||_2 <= eps``.

    - ``x is None``: the worst shared perturbation on whitened data,
      ``max_delta E ||B (A x + delta) - x||^2 = ||B A - I||_F^2 + eps^2 sigma_max(B)^2``; returns float.
    - ``x`` of shape ``(K, n)``: per sample, ``max_{||delta|| <= eps} ||B (A x_k + delta) - x_k||^2``
      (a trust-region problem solved to machine precision, see :func:`worst_case_perturbation`);
      returns a ``(K,)`` float64 array. With ``B A x_k = x_k`` this is ``eps^2 sigma_max(B)^2``.
    """
    if x is None:
        return clean_error(B, A) + worst_case_deviation(B, eps)
    _, value = worst_case_perturbation(B, A, eps, x)
    return value


def worst_case_perturbation(B: Any, A: Any, eps: float, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """The per-sample worst perturbation ``delta_k`` maximising ``||r_k + B delta||^2``, ``||delta|| <= eps``.

    ``r_k = B A x_k - x_k``. Maximising a convex quadratic over a ball: the optimum is on the sphere,
    with ``delta = Z a``, ``B = W diag(b) Z^T`` and ``a_i = b_i w_i / (nu - b_i^2)``, ``w = W^T r``,
    where ``nu >= b_max^2`` solves ``||a|| = eps`` (bisection in float64); the "hard case" (``r`` has no
    component along the top singular vectors) puts the remaining budget on the top right singular
    vector.

    Parameters
    ----------
    B : (n, m), A : (m, n)
    eps : float
        Absolute radius in measurement units.
    x : array_like or torch.Tensor, shape (K, n)

    Returns
    -------
    delta : numpy.ndarray, shape (K, m)
    value : numpy.ndarray, shape (K,)
        ``||B (A x_k + delta_k) - x_k||^2``.
    """
    A = _matrix(A)
    B = _matrix(B, "B")
    _check_pair(B, A)
    eps = _nonneg(eps, "eps")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    X = np.asarray(x, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != A.shape[1]:
        raise ValueError(f"x must have shape (K, n) = (K, {A.shape[1]}), got {X.shape}")
    R = X @ (B @ A).T - X  # (K, n) residuals
    W, b, Zt = np.linalg.svd(B, full_matrices=False)  # B = W diag(b) Zt
    deltas = np.zeros((X.shape[0], A.shape[0]))
    if eps == 0.0 or b.size == 0 or b[0] == 0.0:
        return deltas, np.sum(R**2, axis=1)
    gap = (b[0] - b) * (b[0] + b)  # b_max^2 - b^2 without cancellation
    for idx, r in enumerate(R):
        deltas[idx] = Zt.T @ trust_region_max(b**2, b * (W.T @ r), eps, gap=gap)
    values = np.sum((R + deltas @ B.T) ** 2, axis=1)
    return deltas, values


def trust_region_max(theta: np.ndarray, c: np.ndarray, radius: float, *, gap: np.ndarray | None = None) -> np.ndarray:
    """``argmax_{||a||_2 <= radius} sum_i theta_i a_i^2 + 2 c_i a_i`` for ``theta >= 0`` (float64).

    A convex quadratic over a ball: the maximiser lies on the sphere, ``a_i = c_i / (nu - theta_i)``
    with ``nu >= max(theta)`` solving ``||a|| = radius`` (bisection on ``t = nu - max(theta)``, no
    underflow in the near-hard case). In the hard case (``c`` has no component along the top
    eigenvalue and the other directions do not use up the budget) the rest of the budget goes to the
    first top direction. ``gap`` may give ``max(theta) - theta`` computed without cancellation.
    """
    theta = np.asarray(theta, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    radius = float(radius)
    a = np.zeros_like(c)
    if radius == 0.0 or c.size == 0:
        return a
    tmax = float(theta.max())
    gap = tmax - theta if gap is None else np.asarray(gap, dtype=np.float64)
    top = gap <= 1e-12 * max(tmax, 1e-300)
    scale = max(float(np.abs(c).max()), 1e-300)
    if np.all(np.abs(c[top]) <= 1e-14 * scale) or not np.any(c):
        # hard case candidate: nu = max(theta) if the other directions do not use up the budget
        with np.errstate(divide="ignore", invalid="ignore"):
            other = np.where(top, 0.0, c / gap)
        used = float(np.sum(other**2))
        if used <= radius**2:
            other[int(np.flatnonzero(top)[0])] = math.sqrt(radius**2 - used)
            return other
    lo, hi = 0.0, scale * float(np.linalg.norm(c / scale)) / radius  # at t = hi, ||a|| <= radius
    for _ in range(200):
        t = 0.5 * (lo + hi)
        if t == lo or t == hi:
            break
        with np.errstate(over="ignore", divide="ignore"):
            norm2 = np.sum((c / (t + gap)) ** 2)
        lo, hi = (t, hi) if norm2 > radius**2 else (lo, t)
    # a = c / (t + gap), computed as c * hi / (hi + gap) (same direction, never overflows when hi is
    # tiny: the near-hard case), then scaled to land exactly on the sphere.
    a = c * (hi / (hi + gap))
    a /= np.abs(a).max()  # rescale first, so the norm below cannot underflow
    a *= radius / np.linalg.norm(a)
    return a
