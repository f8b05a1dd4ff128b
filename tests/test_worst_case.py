"""Worst cases you can trust: the default attack against exact worst cases of linear maps, Jacobian norms,
restarts and warm starts, the convergence diagnostic, --verify."""

import math

import numpy as np
import pytest
import torch

from ctrobust.attacks import AttackSettings, apgd_checkpoints, pga_attack
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.reconstruction.methods import FBPReconstruction
from ctrobust.models.linear import LinearReconstruction
from ctrobust.operators.radon import RadonTransform
from ctrobust.evaluation.robustness import robustness_curve, verification_settings, verify_attack
from ctrobust.attacks.linear_theory import trust_region_max, worst_case_perturbation
from ctrobust.attacks.worst_case import exact_worst_case, jacobian_norm, linearized_worst_case

D64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def linear_map(s, m, seed):
    """LinearReconstruction with B = U diag(s) V^T, B of shape (len(s), m)."""
    g = gen(seed)
    n = len(s)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D64))
    v, _ = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=D64))
    b = u @ torch.diag(torch.as_tensor(s, dtype=D64)) @ v.T
    return LinearReconstruction(m, n, init=b, dtype=D64), b


SPECTRA = {
    "logspace(0, 2)": torch.logspace(0, 2, 20, dtype=D64),  # the example
    "clustered top": torch.cat([torch.tensor([1.0, 0.9995, 0.999], dtype=D64), torch.linspace(0.5, 0.01, 17, dtype=D64)]),
    "ill conditioned": torch.logspace(-3, 0, 20, dtype=D64),
}


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("eps", [0.005, 0.04])
def test_default_attack_reaches_the_exact_worst_case_of_linear_maps(spectrum, eps):
    m = 40
    f, b = linear_map(SPECTRA[spectrum], m, seed=1)
    A = torch.randn(m, 20, generator=gen(2), dtype=D64)
    x = torch.randn(6, 20, generator=gen(3), dtype=D64)
    y = x @ A.T
    radius = eps * y.norm(dim=1)
    exact_truth = np.array([worst_case_perturbation(b, A, float(radius[i]), x[i:i + 1])[1][0] for i in range(6)])
    res = pga_attack(f, y, x, eps)
    ratio = res.error.numpy() / exact_truth
    assert ratio.min() >= 0.995 and ratio.max() <= 1 + 1e-9, ratio
    # the clean target: the worst deviation is (r sigma_max)^2 exactly
    exact_clean = (radius * SPECTRA[spectrum].max()) ** 2
    res = pga_attack(f, y, eps=eps, settings=AttackSettings(target="clean"))
    ratio = (res.error / exact_clean).numpy()
    assert ratio.min() >= 0.995 and ratio.max() <= 1 + 1e-9, ratio
    # and the ball is respected to 1e-6 relative
    assert torch.all(res.perturbation_norm <= radius * (1 + 1e-6))


@pytest.fixture(scope="module")
def fbp16():
    op = RadonTransform(ParallelBeam2D(16, 24))
    return op, FBPReconstruction(op)


def _dense_fbp(op, f):
    """FBP as a dense (n, m) float64 matrix, column by column: the independent reference."""
    m = math.prod(op.range_shape)
    eye = torch.eye(m, dtype=D64).reshape(m, *op.range_shape)
    with torch.no_grad():
        return f(eye).reshape(m, -1).T.contiguous()


def test_exact_worst_case_of_fbp_matches_the_dense_trust_region_solution(fbp16):
    op, f = fbp16
    B = _dense_fbp(op, f)
    A = op.to_dense() if hasattr(op, "to_dense") else None
    x = torch.rand(3, 1, 16, 16, generator=gen(4), dtype=D64)
    y = op(x)
    radius = 0.02 * y.flatten(1).norm(dim=1)
    delta, err = exact_worst_case(f, y, x, radius)
    # reference: the trust-region problem with the dense SVD of B (theory.worst_case_perturbation), r = B y - x
    ref = []
    for i in range(3):
        r = (B @ y[i].flatten() - x[i].flatten()).numpy()
        W, s, Zt = np.linalg.svd(B.numpy(), full_matrices=False)
        a = trust_region_max(s**2, s * (W.T @ r), float(radius[i]))
        ref.append(float(np.sum((r + B.numpy() @ (Zt.T @ a)) ** 2)))
    np.testing.assert_allclose(err.numpy(), ref, rtol=1e-6)
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), radius, rtol=1e-9, atol=0)
    assert A is None or A.shape  # (the operator itself is not needed: FBP is the map)


@pytest.mark.parametrize("target, steps, floor", [("truth", 100, 0.995), ("clean", 100, 0.99), ("clean", 300, 0.995)])
def test_default_attack_reaches_the_exact_worst_case_of_fbp(fbp16, target, steps, floor):
    """At 16 px, 24 views FBP's top two singular values are 0.6 % apart: the deviation target (a pure
    top-singular-vector problem) separates them slowly, 99.06 % in 100 steps, 99.97 % in 300
    (docs/robustness.md); the truth target, whose linear term picks the direction, is exact in 100."""
    op, f = fbp16
    x = torch.rand(4, 1, 16, 16, generator=gen(5), dtype=D64)
    y = op(x)
    for eps in (0.01, 0.04):
        radius = eps * y.flatten(1).norm(dim=1)
        _, exact = exact_worst_case(f, y, x if target == "truth" else None, radius)
        res = pga_attack(f, y, x, eps, AttackSettings(target=target, steps=steps))
        ratio = (res.error / exact).numpy()
        assert ratio.min() >= floor and ratio.max() <= 1 + 1e-7, (eps, ratio)


def test_old_fixed_step_rule_stays_available_and_is_weaker(fbp16):
    op, f = fbp16
    x = torch.rand(4, 1, 16, 16, generator=gen(6), dtype=D64)
    y = op(x)
    new = pga_attack(f, y, x, 0.04)
    old = pga_attack(f, y, x, 0.04, AttackSettings(rule="pga", steps=50, extend=0))  # at its own budget
    assert new.attack == "apgd" and old.attack == "pga" and old.passes == 50 and new.passes == 100
    assert float(old.error.sum()) < float(new.error.sum())


def test_jacobian_norm_of_a_linear_map_is_its_operator_norm(fbp16):
    f, b = linear_map(SPECTRA["clustered top"], 40, seed=7)
    y = torch.randn(3, 40, generator=gen(8), dtype=D64)
    got = jacobian_norm(f, y)
    torch.testing.assert_close(got, torch.full((3,), float(torch.linalg.matrix_norm(b, 2)), dtype=D64), rtol=1e-4, atol=0)
    op, fbp = fbp16
    dense = float(torch.linalg.matrix_norm(_dense_fbp(op, fbp), 2))
    got = jacobian_norm(fbp, op(torch.rand(2, 1, 16, 16, dtype=D64, generator=gen(9))), max_iterations=200, tol=1e-10)
    torch.testing.assert_close(got, torch.full((2,), dense, dtype=D64), rtol=1e-4, atol=0)


def test_jacobian_norm_of_a_network_matches_finite_differences():
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 5)).double()
    y = torch.randn(2, 6, generator=gen(10), dtype=D64)
    got = jacobian_norm(net, y, max_iterations=6)
    for i in range(2):
        J = torch.autograd.functional.jacobian(net, y[i])
        assert float(got[i]) == pytest.approx(float(torch.linalg.matrix_norm(J, 2)), rel=1e-8)


def test_linearized_worst_case_is_first_order_for_a_network():
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 5)).double()
    y = torch.randn(2, 6, generator=gen(11), dtype=D64)
    x = torch.randn(2, 5, generator=gen(12), dtype=D64)
    for rho in (1e-4, 1e-3):
        wc = linearized_worst_case(net, y, x, torch.full((2,), rho, dtype=D64))
        with torch.no_grad():
            actual = ((net(y + wc.delta[0]) - x) ** 2).sum(1)
        gain_pred = wc.predicted[0] - wc.clean
        gain = actual - wc.clean
        assert torch.allclose(gain, gain_pred, rtol=50 * rho)  # agrees to first order in rho


def test_restarts_and_warm_starts_never_lower_the_result():
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6)).double()
    y = torch.randn(5, 8, generator=gen(13), dtype=D64)
    x = torch.randn(5, 6, generator=gen(14), dtype=D64)
    one = pga_attack(net, y, x, 0.2, AttackSettings(steps=20), generator=gen(15))
    three = pga_attack(net, y, x, 0.2, AttackSettings(steps=20, restarts=3), generator=gen(15))
    assert torch.all(three.error >= one.error)
    # a warm start: the result is at least the start's own loss
    warm = pga_attack(net, y, x, 0.2, AttackSettings(steps=5), init=one.delta)
    assert torch.all(warm.error >= one.error - 1e-12)
    # along a grid: a sample's attacked error never decreases with eps (the smaller ball's worst is inside)
    data = [x_ for x_ in torch.rand(6, 1, 16, 16, generator=gen(16), dtype=D64)]
    op = RadonTransform(ParallelBeam2D(16, 24))
    fbp = FBPReconstruction(op)
    res = robustness_curve(fbp, data, op, [0.0, 0.005, 0.01, 0.02], AttackSettings(steps=10), progress=False,
                           linearization=True)
    errs = {}
    for r in res.rows:
        if r["condition"] == "attack":
            errs.setdefault(r["sample"], []).append((r["eps"], r["sq_error"]))
    for values in errs.values():
        values = [v for _, v in sorted(values)]
        assert all(b >= a for a, b in zip(values, values[1:]))
    for r in res.rows:  # FBP is linear: every attack row carries the exact worst case
        if r["condition"] == "attack" and r["eps"] > 0:
            assert 0.9 <= r["attack_over_exact"] <= 1.0 and r["exact_sq_error"] >= r["sq_error"]


def test_warm_start_on_a_linear_map_is_not_weaker(fbp16):
    """On a linear f the worst direction barely changes with eps: a warm-started curve is at least as strong."""
    op, f = fbp16
    data = [x_ for x_ in torch.rand(4, 1, 16, 16, generator=gen(17), dtype=D64)]
    grid = [0.01, 0.02, 0.04]
    warm = robustness_curve(f, data, op, grid, AttackSettings(steps=15, warm_start=True), progress=False,
                            linearization=False)
    cold = robustness_curve(f, data, op, grid, AttackSettings(steps=15), progress=False, linearization=False)
    w = [r["sq_error"] for r in warm.rows if r["condition"] == "attack"]
    c = [r["sq_error"] for r in cold.rows if r["condition"] == "attack"]
    assert sum(w) >= sum(c) * (1 - 1e-9)
    assert warm.config["warm_start"] and not cold.config["warm_start"]


def test_convergence_diagnostic():
    f, _ = linear_map(SPECTRA["clustered top"], 40, seed=18)
    y = torch.randn(4, 40, generator=gen(19), dtype=D64)
    # far too small fixed steps: the loss is still climbing at the end
    crawling = pga_attack(f, y, eps=0.05, settings=AttackSettings(target="clean", rule="pga", steps=20, step_size=0.01))
    assert crawling.n_not_converged == 4 and crawling.converged.dtype == torch.bool
    done = pga_attack(f, y, eps=0.05, settings=AttackSettings(target="clean"))
    assert done.n_not_converged == 0


def test_continuations_run_only_for_runs_still_rising_and_only_raise_the_result():
    f, b = linear_map(SPECTRA["clustered top"], 40, seed=18)
    y = torch.randn(4, 40, generator=gen(19), dtype=D64)
    exact = (0.05 * y.norm(dim=1)) ** 2 * torch.linalg.matrix_norm(b, 2) ** 2
    # APGD with a tiny first step is still climbing after 10 steps; one continuation from the best point (first
    # step r / 2) reaches the exact worst case of the linear map and converges; a second one is not run
    slow = AttackSettings(target="clean", steps=10, step_size=0.01)
    cut = pga_attack(f, y, eps=0.05, settings=slow.replace(extend=0))
    cont = pga_attack(f, y, eps=0.05, settings=slow.replace(extend=2))
    assert cut.n_not_converged == 4 and cut.passes == 10
    assert cont.n_not_converged == 0 and cont.passes == 10 + 10
    assert bool((cont.error >= 0.995 * exact).all()) and bool((cut.error < 0.5 * exact).all())
    assert cont.history.shape == cut.history.shape  # the history holds the restarts' runs only
    assert bool((cont.perturbation_norm <= 0.05 * y.norm(dim=1) * (1 + 1e-12)).all())
    # converged runs are never continued: the budget is exactly steps x restarts
    done = pga_attack(f, y, eps=0.05, settings=AttackSettings(target="clean", restarts=2))
    assert done.n_not_converged == 0 and done.passes == 2 * 100
    # a crawl that no continuation fixes (fixed tiny PGA steps): every continuation runs, each raises the result
    crawl = AttackSettings(target="clean", rule="pga", steps=20, step_size=0.01)
    errors = [pga_attack(f, y, eps=0.05, settings=crawl.replace(extend=k)) for k in (0, 1, 3)]
    assert [r.passes for r in errors] == [20, 30, 50] and all(r.n_not_converged == 4 for r in errors)
    assert bool((errors[1].error > errors[0].error).all()) and bool((errors[2].error > errors[1].error).all())


def test_extend_is_validated_recorded_and_zero_for_old_records():
    assert AttackSettings().extend == 2 and AttackSettings().to_config()["extend"] == 2
    with pytest.raises(ValueError, match="extend"):
        AttackSettings(extend=-1)
    old = {k: v for k, v in AttackSettings(steps=7).to_config().items() if k != "extend"}
    assert AttackSettings.from_config(old).extend == 0  # made before continuations: it ran none
    assert AttackSettings.from_config(AttackSettings(extend=3).to_config()).extend == 3


def test_restart_spread_is_the_gap_between_the_two_best_runs():
    """Recomputed independently from each run's iterates (recorded by the callback), not from history."""
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6)).double()
    y = torch.randn(5, 8, generator=gen(20), dtype=D64)
    x = torch.randn(5, 6, generator=gen(21), dtype=D64)
    seen = {}
    res = pga_attack(net, y, x, 0.3, AttackSettings(steps=4, restarts=3), generator=gen(22), callback=lambda restart, k,
                     d: seen.setdefault(restart, []).append(d.clone()))
    with torch.no_grad():
        runs = torch.stack([torch.stack([(net(y + d) - x).pow(2).sum(1) for d in seen[r]]).amax(0) for r in range(3)])
    best, second = runs.sort(dim=0, descending=True).values[:2]
    assert torch.allclose(res.restart_spread, 1 - second / best, rtol=1e-9, atol=1e-12)
    assert bool((res.restart_spread > 0).any())  # random starts on a ReLU net: the runs differ
    assert torch.allclose(res.error, best)
    assert pga_attack(net, y, x, 0.3, AttackSettings(steps=4)).restart_spread is None  # one run: no spread to speak of
    # a robustness curve carries it per attack row, and only with restarts >= 2
    op = RadonTransform(ParallelBeam2D(16, 24))
    data = [x_ for x_ in torch.rand(2, 1, 16, 16, generator=gen(23), dtype=D64)]
    curve = robustness_curve(FBPReconstruction(op), data, op, [0.0, 0.01], AttackSettings(steps=3, restarts=2),
                             progress=False, linearization=False)
    rows = [r for r in curve.rows if r["condition"] == "attack" and r["eps"] > 0]
    assert len(rows) == 2 and all(0 <= r["restart_spread"] < 1 for r in rows)
    single = robustness_curve(FBPReconstruction(op), data, op, [0.01], AttackSettings(steps=3), progress=False,
                              linearization=False)
    assert all("restart_spread" not in r for r in single.rows)


def test_apgd_checkpoints_follow_croce_and_hein():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1) == []
    pts = apgd_checkpoints(1000)
    gaps = np.diff([0, *pts])
    assert pts[0] == 220 and all(g >= 60 for g in gaps[:-1]) and all(np.diff(gaps) <= 0)


def test_verify_reports_ratio_default_over_strong(fbp16):
    op, f = fbp16
    data = [x_ for x_ in torch.rand(3, 1, 16, 16, generator=gen(20), dtype=D64)]
    weak = robustness_curve(f, data, op, [0.0, 0.04], AttackSettings(steps=3, rule="pga"), progress=False,
                            linearization=False)
    rows = verify_attack(f, data, op, weak, 2, verification_settings(weak.config, steps=100, restarts=1))
    assert [r["eps"] for r in rows] == [0.04] and rows[0]["n"] == 2
    assert rows[0]["ratio_min"] < 0.99  # 3 fixed steps are far from the worst case, and --verify shows it
    strong = robustness_curve(f, data, op, [0.0, 0.04], progress=False, linearization=False)
    rows = verify_attack(f, data, op, strong, 2, verification_settings(strong.config, steps=100, restarts=2))
    assert rows[0]["ratio_min"] >= 0.995


def test_overflowing_eps_is_refused():
    y = torch.rand(2, 5)
    with pytest.raises(ValueError, match="overflow"):
        pga_attack(lambda v: v, y, eps=1e20, settings=AttackSettings(target="clean"))
