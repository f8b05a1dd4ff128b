"""The linear min-max closed form against direct numerical optimisation and exact worst cases."""

import numpy as np
import pytest
import scipy.optimize
import torch

from ctrobust.operators.cs import DCTSubmatrix
from ctrobust.attacks.linear_theory import (
    clean_error,
    minmax_linear_operator,
    minmax_linear_solution,
    minmax_matrix_objective,
    minmax_objective,
    singular_value_filter,
    worst_case_deviation,
    worst_case_error,
    worst_case_perturbation,
)


def spectrum(cond, r, seed):
    """``r`` singular values in [1/cond, 1], log-uniform, both ends present, shuffled."""
    rng = np.random.default_rng(seed)
    s = np.exp(rng.uniform(-np.log(cond), 0.0, r))
    s[:2] = [1.0, 1.0 / cond]
    return rng.permutation(s)


def numerical_minimiser(s, eps, lam):
    """Minimise J directly, with no knowledge of the clipping structure.

    J is non-smooth (a max), so use its epigraph form, a smooth convex QP in (q, t):
    minimise (1 + lam) sum (q_i s_i - 1)^2 + lam eps^2 t^2 subject to -t <= q_i <= t (SLSQP).
    """
    r = s.size

    def f(z):
        return (1 + lam) * np.sum((z[:-1] * s - 1) ** 2) + lam * eps**2 * z[-1] ** 2

    def grad(z):
        g = np.empty_like(z)
        g[:-1] = 2 * (1 + lam) * (z[:-1] * s - 1) * s
        g[-1] = 2 * lam * eps**2 * z[-1]
        return g

    ones = np.ones((r, 1))
    cons = [
        {"type": "ineq", "fun": lambda z: z[-1] - z[:-1], "jac": lambda z: np.hstack([-np.eye(r), ones])},
        {"type": "ineq", "fun": lambda z: z[-1] + z[:-1], "jac": lambda z: np.hstack([np.eye(r), ones])},
    ]
    z0 = np.append(np.ones(r), 1.0)
    res = scipy.optimize.minimize(f, z0, jac=grad, constraints=cons, method="SLSQP",
                                  options={"ftol": 1e-16, "maxiter": 300})
    return res.x[:-1]


@pytest.mark.parametrize("cond", [1e1, 1e2, 1e3, 1e4])
@pytest.mark.parametrize("lam", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("eps", [1e-3, 1e-2, 1e-1])
def test_closed_form_equals_numerical_minimisation(cond, lam, eps):
    s = spectrum(cond, 10, seed=int(np.log10(cond)) * 7 + int(lam * 10))
    q, k = minmax_linear_solution(s, eps, lam)
    q_num = numerical_minimiser(s, eps, lam)
    J = minmax_objective(q, s, eps, lam)
    J_num = minmax_objective(q_num, s, eps, lam)
    # Measured: max relative difference in q 1.0e-8, the solver never below the closed form.
    assert J <= J_num * (1 + 1e-12)
    np.testing.assert_allclose(q_num, q, rtol=1e-6)
    assert 1 <= k <= s.size
    # the structure: the k smallest are clipped to one level c, the rest inverted exactly
    order = np.argsort(s)
    c = q.max()
    np.testing.assert_allclose(q[order[:k]], c, rtol=1e-14)
    np.testing.assert_allclose(q[order[k:]], 1 / s[order[k:]], rtol=1e-14)
    assert np.all(s[order[:k]] < 1 / c) and np.all(s[order[k:]] >= 1 / c * (1 - 1e-12))


def test_closed_form_is_not_beaten_by_perturbations():
    rng = np.random.default_rng(3)
    for trial in range(5):
        s = spectrum(10 ** rng.uniform(1, 4), 12, seed=trial)
        eps, lam = 10 ** rng.uniform(-3, -0.5), 10 ** rng.uniform(-1, 1)
        q, _ = minmax_linear_solution(s, eps, lam)
        J = minmax_objective(q, s, eps, lam)
        for scale in (1e-6, 1e-3, 1e-1):
            for _ in range(50):
                dq = rng.normal(size=q.shape) * scale * q
                assert minmax_objective(q + dq, s, eps, lam) >= J * (1 - 1e-14)
            for i in range(q.size):  # one entry at a time, both directions
                for sign in (1, -1):
                    dq = np.zeros_like(q)
                    dq[i] = sign * scale * q[i]
                    assert minmax_objective(q + dq, s, eps, lam) >= J * (1 - 1e-14)


def test_eps_to_zero_gives_pseudo_inverse():
    s = spectrum(1e3, 8, seed=1)
    q0, k0 = minmax_linear_solution(s, 0.0, 1.0)
    assert k0 == 0
    np.testing.assert_allclose(q0, 1 / s, rtol=1e-15)
    assert minmax_linear_solution(s, 0.3, 0.0)[1] == 0  # lam = 0: no adversarial term
    errors = [np.max(np.abs(minmax_linear_solution(s, eps, 1.0)[0] * s - 1)) for eps in (1e-4, 1e-6, 1e-8)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6
    A = np.random.default_rng(0).normal(size=(6, 9))
    B = minmax_linear_operator(A, 0.0, 1.0)
    assert B.dtype == torch.float64 and B.shape == (9, 6)
    np.testing.assert_allclose(B.numpy(), np.linalg.pinv(A), atol=1e-12)


def test_growing_eps_clips_more():
    s = spectrum(1e4, 20, seed=5)
    eps_grid = np.logspace(-5, 1, 40)
    sols = [minmax_linear_solution(s, eps, 1.0) for eps in eps_grid]
    ks = [k for _, k in sols]
    levels = [q.max() for q, _ in sols]
    assert all(a <= b for a, b in zip(ks, ks[1:])) and ks[0] == 1 and ks[-1] == 20
    assert all(a >= b for a, b in zip(levels, levels[1:]))
    for (qa, _), (qb, _) in zip(sols, sols[1:]):
        assert np.all(qb <= qa * (1 + 1e-14))


def test_order_and_zero_singular_values():
    s = np.array([0.3, 0.0, 1.0, 0.01, 0.3])
    q, k = minmax_linear_solution(s, 0.05, 2.0)
    perm = np.array([4, 2, 0, 3, 1])
    qp, kp = minmax_linear_solution(s[perm], 0.05, 2.0)
    np.testing.assert_allclose(qp, q[perm])
    assert kp == k
    assert q[1] == 0.0  # a zero singular value: nothing to invert
    assert q[0] == q[4]  # ties treated alike


def test_matrix_form_minimiser_and_objective_identity():
    """``B = V diag(q) U^T`` minimises J(B) over all (n, m) matrices, not only the diagonal family."""
    rng = np.random.default_rng(11)
    m, n, eps, lam = 5, 7, 0.2, 1.5
    U, _ = np.linalg.qr(rng.normal(size=(m, m)))
    V, _ = np.linalg.qr(rng.normal(size=(n, n)))
    s = np.array([1.0, 0.5, 0.1, 0.03, 0.005])
    A = U @ np.diag(s) @ V[:, :m].T
    B = minmax_linear_operator(A, eps, lam).numpy()
    q, _ = minmax_linear_solution(s, eps, lam)
    J = minmax_matrix_objective(B, A, eps, lam)
    assert J == pytest.approx(minmax_objective(q, s, eps, lam) + (1 + lam) * (n - m), rel=1e-12)
    for scale in (1e-5, 1e-2, 1.0):
        for _ in range(200):
            D = rng.normal(size=B.shape) * scale * np.linalg.norm(B, 2)
            assert minmax_matrix_objective(B + D, A, eps, lam) >= J * (1 - 1e-13)
    q_read, off = singular_value_filter(B, A)
    np.testing.assert_allclose(q_read, q, rtol=1e-10)  # s is given in descending order
    assert off < 1e-12


def test_operator_from_cs_operator_matches_dense():
    op = DCTSubmatrix(6, 14, seed=2)
    B_op = minmax_linear_operator(op, 0.05, 1.0)
    B_dense = minmax_linear_operator(op.to_dense().numpy(), 0.05, 1.0)
    assert torch.allclose(B_op, B_dense, atol=1e-12)
    q, k = minmax_linear_solution(op.singular_values(), 0.05, 1.0)
    assert k >= 1
    np.testing.assert_allclose(singular_value_filter(B_op, op)[0], q, rtol=1e-9)


def test_worst_case_deviation_is_exact():
    rng = np.random.default_rng(4)
    B = rng.normal(size=(9, 6))
    eps = 0.3
    value = worst_case_deviation(B, eps)
    smax = np.linalg.svd(B, compute_uv=False)[0]
    assert value == pytest.approx(eps**2 * smax**2, rel=1e-14)
    _, _, vt = np.linalg.svd(B)
    assert np.sum((B @ (eps * vt[0])) ** 2) == pytest.approx(value, rel=1e-12)  # attained
    d = rng.normal(size=(2000, 6))
    d = eps * d / np.linalg.norm(d, axis=1, keepdims=True)
    assert np.max(np.sum((d @ B.T) ** 2, axis=1)) <= value * (1 + 1e-12)  # never exceeded


def test_worst_case_error_whitened_equals_discrete_whitened_average():
    """``max_delta E ||B (A x + delta) - x||^2`` over a zero-mean, identity-covariance set {+-sqrt(n) e_j}."""
    rng = np.random.default_rng(6)
    A = rng.normal(size=(4, 6))
    B = minmax_linear_operator(A, 0.1, 1.0).numpy()
    n, eps = 6, 0.4
    X = np.sqrt(n) * np.vstack([np.eye(n), -np.eye(n)])

    def mean_error(delta):
        return np.mean(np.sum(((X @ A.T + delta) @ B.T - X) ** 2, axis=1))

    wc = worst_case_error(B, A, eps)
    assert mean_error(np.zeros(4)) == pytest.approx(clean_error(B, A), rel=1e-12)
    top = np.linalg.svd(B)[2][0]
    assert mean_error(eps * top) == pytest.approx(wc, rel=1e-12)
    for _ in range(300):
        d = rng.normal(size=4)
        assert mean_error(eps * d / np.linalg.norm(d)) <= wc * (1 + 1e-12)


def test_per_sample_worst_case_matches_multistart_optimisation():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 8))
    B = rng.normal(size=(8, 5))
    x = rng.normal(size=(4, 8))
    eps = 0.7
    delta, value = worst_case_perturbation(B, A, eps, x)
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), eps, rtol=1e-12)
    np.testing.assert_allclose(value, np.sum(((x @ A.T + delta) @ B.T - x) ** 2, axis=1), rtol=1e-12)
    for k in range(4):
        r = B @ A @ x[k] - x[k]

        def neg(z):
            return -np.sum((r + B @ (eps * z / np.linalg.norm(z))) ** 2)

        best = max(-scipy.optimize.minimize(neg, rng.normal(size=5), method="BFGS").fun for _ in range(10))
        assert value[k] >= best * (1 - 1e-12)
        assert value[k] == pytest.approx(best, rel=1e-9)  # measured: agreement to 1e-15


def test_per_sample_worst_case_hard_case_and_range_case():
    # r has no component on B's top singular vector: the budget goes there anyway (hard case)
    B = np.diag([3.0, 1.0, 0.5])
    A = np.eye(3)
    x = np.array([[0.0, 1.0, 0.0]])  # r = (B - I) x = 0 on the top direction
    eps = 0.1
    _, value = worst_case_perturbation(B, A, eps, x)
    grid = np.linspace(0, 2 * np.pi, 20001)
    brute = max(np.sum((np.array([0, 0.0, 0]) + B @ (eps * np.array([np.cos(t), np.sin(t), 0]))) ** 2) for t in grid)
    assert value[0] == pytest.approx(brute, rel=1e-6) and value[0] >= brute
    assert value[0] == pytest.approx(9 * eps**2, rel=1e-12)  # r = 0 here, so eps^2 sigma_max^2
    # the pseudo-inverse on x in range(A^T): the error is the deviation eps^2 sigma_max(B)^2, exactly
    rng = np.random.default_rng(2)
    A = rng.normal(size=(4, 7))
    P = np.linalg.pinv(A)
    xs = rng.normal(size=(3, 4)) @ A
    np.testing.assert_allclose(worst_case_error(P, A, 0.2, xs), worst_case_deviation(P, 0.2), rtol=1e-9)


def test_tradeoff_pinv_vs_filtered_on_ill_conditioned_operator():
    op = DCTSubmatrix(48, 192, seed=0)  # cond 457
    A = op.to_dense().numpy()
    floor = A.shape[1] - A.shape[0]  # ||B A - I||_F^2 >= n - m for every B: the unseen null space
    eps = 0.1
    P = minmax_linear_operator(A, 0.0, 1.0).numpy()
    F = minmax_linear_operator(A, eps, 1.0).numpy()
    assert clean_error(P, A) == pytest.approx(floor, abs=1e-8)  # the true inverse is exact when clean
    assert clean_error(F, A) > floor + 1.0
    # measured: worst-case excess 2088 (pinv) vs 2.29 (filtered)
    assert worst_case_error(F, A, eps) - floor < 1e-2 * (worst_case_error(P, A, eps) - floor)


def test_input_errors():
    with pytest.raises(ValueError, match="eps"):
        minmax_linear_solution([1.0], -0.1, 1.0)
    with pytest.raises(ValueError, match="lam"):
        minmax_linear_solution([1.0], 0.1, float("nan"))
    with pytest.raises(ValueError, match="1-D"):
        minmax_linear_solution(np.ones((2, 2)), 0.1, 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        minmax_linear_solution([1.0, -1.0], 0.1, 1.0)
    with pytest.raises(ValueError, match=r"B must have shape \(n, m\)"):
        clean_error(np.ones((3, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"x must have shape"):
        worst_case_error(np.ones((3, 2)), np.ones((2, 3)), 0.1, np.ones((2, 4)))


@pytest.mark.parametrize("tiny", [1e-310, 1e-200, 1e-30])
def test_worst_case_perturbation_near_hard_case_is_finite_and_exact(tiny):
    """A residual along the top direction of denormal size (the near-hard case): no overflow, no NaN."""
    B = np.diag([1.0, 0.5])
    A = 2 * np.eye(2)
    x = np.array([[tiny, 1.0]])  # residual (B A - I) x = (tiny, 0)
    delta, value = worst_case_perturbation(B, A, 0.1, x)
    assert np.all(np.isfinite(delta)) and np.isclose(np.linalg.norm(delta), 0.1)
    theta = np.linspace(0, 2 * np.pi, 100_001)
    circle = 0.1 * np.stack([np.cos(theta), np.sin(theta)], 1)
    brute = np.max(np.sum(((x @ (B @ A).T - x) + circle @ B.T) ** 2, axis=1))
    assert value[0] == pytest.approx(brute, rel=1e-9)
