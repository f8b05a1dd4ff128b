"""TV by Chambolle-Pock (checked against ODL's own PDHG) and the deep image prior, on tiny problems."""

import math
import warnings

import numpy as np
import pytest
import torch

from ctrobust.reconstruction.classical import (
    deep_image_prior,
    divergence,
    gradient,
    operator_norm,
    total_variation,
    tv_objective,
    tv_reconstruction,
)
from ctrobust.reconstruction.holdout import holdout_mask
from ctrobust.operators.base import LinearOperator

warnings.filterwarnings("ignore", message="Sparse")


class Dense(LinearOperator):
    """A small dense matrix as a LinearOperator on vectorised images (independent of ctrobust's CS code)."""

    def __init__(self, matrix: torch.Tensor, image_shape):
        super().__init__((matrix.shape[1],), (matrix.shape[0],))
        self.register_buffer("matrix", matrix)
        self.image_shape = tuple(image_shape)

    def _matvec(self, x):
        return x @ self.matrix.to(x.dtype).T

    def _rmatvec(self, y):
        return y @ self.matrix.to(y.dtype)


def _dense(m, shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    return Dense(torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(m), shape)


def _blocks(n, batch=1):
    x = torch.zeros(batch, n, n, dtype=torch.float64)
    x[:, n // 4 : n // 2 + 2, n // 3 : 3 * n // 4] = 1.0
    x[:, n // 2 : n // 2 + 2, n // 2 - 1 : n // 2 + 1] = 0.4
    if batch > 1:
        x[1] = x[1].T.clone()
    return x


@pytest.fixture(scope="module")
def radon32():
    from ctrobust import ParallelBeam2D, RadonTransform

    return RadonTransform(ParallelBeam2D(32, 20))


# -- finite differences ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, nd", [((3, 7, 5), 2), ((4, 9), 1)])
def test_gradient_divergence_are_adjoint(shape, nd):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    p = torch.randn((nd, *shape), generator=gen, dtype=torch.float64)
    lhs = (gradient(x, nd) * p).sum()
    rhs = -(x * divergence(p, nd)).sum()
    assert float(abs(lhs - rhs)) < 1e-12 * float(abs(lhs))


def test_total_variation_closed_form():
    # a k x k square of height h inside a zero image: perimeter-like sum of isotropic forward differences
    x = torch.zeros(1, 8, 8, dtype=torch.float64)
    x[0, 2:5, 2:5] = 2.0
    g = gradient(x)
    # Neumann: the last row / column difference is zero
    assert torch.all(g[0, :, -1, :] == 0) and torch.all(g[1, :, :, -1] == 0)
    # left/top edges: forward differences of +2 at rows/cols 1 (3 each, but (1,1) has neither),
    # right/bottom edges: -2 at rows/cols 4; corner (4,4) has both -> 2*sqrt(2).
    expected = 2.0 * (3 + 3 + 2 + 2) + 2.0 * math.sqrt(2)
    assert float(total_variation(x)[0]) == pytest.approx(expected, rel=1e-12)


# -- TV: agreement with ODL's PDHG -------------------------------------------------------------------


@pytest.mark.parametrize("nonneg", [True, False])
def test_tv_matches_odl_pdhg(nonneg):
    odl = pytest.importorskip("odl")
    n, m, tau, iters = 10, 60, 0.05, 60
    op = _dense(m, (n, n))
    gen = torch.Generator().manual_seed(3)
    y = op(_blocks(n).reshape(1, -1)) + 0.05 * torch.randn(1, m, generator=gen, dtype=torch.float64)
    norm_a = operator_norm(op)
    ours = tv_reconstruction(op, y, tau, iters, x0="zeros", nonneg=nonneg, op_norm=norm_a)

    # the same problem in ODL: K = (A, c * Gradient) with Neumann ('order0') forward differences,
    # g = 1/2 ||. - y||^2 (+) (tau / c) ||.||_{2,1}, f = indicator of x >= 0 (or zero)
    space = odl.uniform_discr([0, 0], [n, n], (n, n), dtype="float64")  # unit cells: plain inner products
    a_odl = odl.MatrixOperator(op.matrix.numpy(), domain=odl.rn(n * n), range=odl.rn(m)) * odl.FlatteningOperator(space)
    c = norm_a / math.sqrt(8)
    grad = c * odl.Gradient(space, pad_mode="order0")
    big_k = odl.BroadcastOperator(a_odl, grad)
    g = odl.functionals.SeparableSum(
        0.5 * odl.functionals.L2NormSquared(a_odl.range).translated(y[0].numpy()),
        (tau / c) * odl.functionals.GroupL1Norm(grad.range),
    )
    f = odl.functionals.IndicatorNonnegativity(space) if nonneg else odl.functionals.ZeroFunctional(space)
    step = math.sqrt(0.9) / math.sqrt(norm_a**2 + 8 * c**2)
    x_odl = space.zero()
    odl.solvers.pdhg(x_odl, f, g, big_k, iters, tau=step, sigma=step)
    x_odl = torch.from_numpy(np.asarray(x_odl.asarray()).copy())

    assert torch.allclose(ours.reshape(n, n), x_odl, atol=1e-10, rtol=0)
    obj_odl = float(tv_objective(op, x_odl.reshape(1, -1), y, tau)[0])
    assert float(tv_objective(op, ours, y, tau)[0]) == pytest.approx(obj_odl, rel=1e-10)


def test_tv_objective_decreases_and_converges():
    n, m, tau = 8, 48, 0.1
    op = _dense(m, (n, n), seed=2)
    y = op(_blocks(n, 2).reshape(2, -1))
    _, hist = tv_reconstruction(op, y, tau, 300, return_history=True)
    assert hist.shape == (300, 2)
    long = tv_objective(op, tv_reconstruction(op, y, tau, 3000), y, tau).double()
    # primal-dual is not monotone, but its late iterates beat all early ones and approach the optimum
    assert torch.all(hist[-1] <= hist[:30].min(0).values)
    assert torch.all(hist[-1] <= long * (1 + 1e-3))
    assert torch.all(long <= hist[-1] + 1e-9)
    # the truth is a minimiser candidate too: the solution must be at least as good
    assert torch.all(long <= tv_objective(op, _blocks(n, 2).reshape(2, -1), y, tau) + 1e-9)


def test_tv_with_tiny_tau_is_least_squares():
    n, m = 6, 100
    op = _dense(m, (n, n), seed=4)
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(2, m, generator=gen, dtype=torch.float64)
    x = tv_reconstruction(op, y, 1e-9, 1500, nonneg=False)
    ls = torch.linalg.lstsq(op.matrix, y.T).solution.T
    assert float((x - ls).norm() / ls.norm()) < 1e-4


def test_tv_batch_is_per_sample_and_beats_fbp_on_noisy_radon(radon32, global_rng_untouched):
    from ctrobust.evaluation.metrics import relative_error

    x = _blocks(32, 2).unsqueeze(1).float()
    y = radon32(x)
    gen = torch.Generator().manual_seed(0)
    y = y + 0.03 * y.norm() / y.numel() ** 0.5 * torch.randn(y.shape, generator=gen)
    rec = tv_reconstruction(radon32, y, 0.5, 80)
    assert rec.shape == x.shape and rec.dtype == torch.float32 and float(rec.min()) >= 0
    single = tv_reconstruction(radon32, y[1:], 0.5, 80)
    assert torch.allclose(rec[1:], single, atol=1e-5)
    assert np.all(relative_error(rec, x) < 0.8 * relative_error(radon32.fbp(y), x))


def test_tv_is_differentiable_wrt_y():
    n, m, tau = 6, 30, 0.05
    op = _dense(m, (n, n), seed=6)
    y0 = op(_blocks(n).reshape(1, -1))
    gen = torch.Generator().manual_seed(7)
    v = torch.randn(y0.shape, generator=gen, dtype=torch.float64)
    w = torch.randn(1, n * n, generator=gen, dtype=torch.float64)

    def loss(y):
        return (tv_reconstruction(op, y, tau, 40, nonneg=False) * w).sum()

    y = y0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(y), y)
    assert torch.isfinite(g).all() and float(g.norm()) > 0
    h = 1e-6
    fd = (loss(y0 + h * v) - loss(y0 - h * v)) / (2 * h)
    assert float((g * v).sum()) == pytest.approx(float(fd), rel=1e-4, abs=1e-8)


def test_pga_attack_differentiates_through_tv(radon32):
    from ctrobust.attacks import AttackSettings, pga_attack

    x = _blocks(32).unsqueeze(1).float()
    y = radon32(x)
    f = lambda v: tv_reconstruction(radon32, v, 0.5, 20)  # noqa: E731
    clean = ((f(y) - x) ** 2).sum()
    res = pga_attack(f, y, x, eps=0.05, settings=AttackSettings(steps=3), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res.error).all() and float(res.error[0]) > float(clean)


def test_tv_rejects_bad_input():
    op = _dense(20, (4, 4))
    y = torch.zeros(1, 20, dtype=torch.float64)
    with pytest.raises(ValueError, match="tau"):
        tv_reconstruction(op, y, -1.0)
    with pytest.raises(ValueError, match="iterations"):
        tv_reconstruction(op, y, 0.1, 0)
    with pytest.raises(ValueError, match="shape"):
        tv_reconstruction(op, torch.zeros(1, 21, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="fbp"):
        tv_reconstruction(op, y, 0.1, x0="fbp")


def test_holdout_mask_fraction_and_seed():
    a = holdout_mask((1, 1, 10, 20), 0.05, torch.Generator().manual_seed(0))
    b = holdout_mask((1, 1, 10, 20), 0.05, torch.Generator().manual_seed(0))
    assert a.dtype == torch.bool and int(a.sum()) == 10 and torch.equal(a, b)
    with pytest.raises(ValueError, match="fraction"):
        holdout_mask((5,), 1.5, torch.Generator())


# -- deep image prior --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dip_problem():
    n = 16
    op = _dense(160, (n, n), seed=8)
    x = _blocks(n).reshape(1, -1)
    gen = torch.Generator().manual_seed(9)
    y = op(x)
    y = (y + 0.05 * y.norm() / y.numel() ** 0.5 * torch.randn(y.shape, generator=gen, dtype=y.dtype)).float()
    return op, x.float(), y


DIP_KW = dict(channels=4, depth=1, lr=0.02, seed=3)


def test_dip_fits_and_improves_on_its_initial_output(dip_problem, global_rng_untouched):
    op, x, y = dip_problem
    initial = deep_image_prior(op, y, iterations=1, **DIP_KW)
    fitted, info = deep_image_prior(op, y, iterations=150, patience=150, return_info=True, **DIP_KW)
    assert fitted.shape == x.shape
    err0 = float((initial - x).norm() / x.norm())
    err1 = float((fitted - x).norm() / x.norm())
    assert err1 < 0.5 * err0
    assert info[0].loss[-1] < 0.1 * info[0].loss[0]
    assert info[0].best_iteration == int(np.argmin(info[0].heldout))


def test_dip_early_stopping_triggers(dip_problem):
    op, x, y = dip_problem
    out, info = deep_image_prior(op, y, iterations=2000, patience=5, return_info=True, **DIP_KW)
    (i,) = info
    assert i.stopped_early and i.iterations_run < 2000
    assert i.iterations_run == i.best_iteration + 1 + 5
    assert min(i.heldout) == i.heldout[i.best_iteration]
    _, plain = deep_image_prior(op, y, iterations=12, early_stopping=False, return_info=True, **DIP_KW)
    assert not plain[0].stopped_early and plain[0].iterations_run == 12 and plain[0].heldout == []


def test_dip_is_deterministic_and_per_sample(dip_problem):
    op, x, y = dip_problem
    y2 = torch.cat([y, 0.5 * y])
    a = deep_image_prior(op, y2, iterations=15, **DIP_KW)
    b = deep_image_prior(op, y2, iterations=15, **DIP_KW)
    assert torch.equal(a, b)
    assert torch.allclose(a[1:], deep_image_prior(op, y2[1:], iterations=15, **DIP_KW), atol=1e-6)
    c = deep_image_prior(op, y, iterations=15, **{**DIP_KW, "seed": 4})
    assert not torch.allclose(a[:1], c)


def test_dip_on_radon_is_differentiable(radon32):
    x = _blocks(32).unsqueeze(1).float()
    y = radon32(x).requires_grad_(True)
    out = deep_image_prior(radon32, y, iterations=4, differentiable=True, **DIP_KW)
    assert out.shape == x.shape
    (g,) = torch.autograd.grad(((out - x) ** 2).sum(), y)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_dip_rejects_bad_arguments(dip_problem):
    op, _, y = dip_problem
    with pytest.raises(ValueError, match="iterations"):
        deep_image_prior(op, y, iterations=0)
    with pytest.raises(ValueError, match="lr"):
        deep_image_prior(op, y, lr=0.0)


def test_methods_registry_builds_tv_and_dip(radon32):
    from ctrobust.reconstruction.methods import build_method

    x = _blocks(32).unsqueeze(1).float()
    y = radon32(x)
    tv = build_method("tv", radon32, tau=0.5, iterations=10)
    assert tv.operator is radon32 and tv.to_config()["tau"] == 0.5
    assert torch.equal(tv(y), tv_reconstruction(radon32, y, 0.5, 10))
    dip = build_method("dip", radon32, iterations=3, **DIP_KW)
    assert torch.equal(dip(y), deep_image_prior(radon32, y, iterations=3, **DIP_KW))
    v = y.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(dip(v).sum(), v)  # differentiable when y requires a gradient
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


# -- choosing the weight -----------------------------------------------------------------------------


def test_select_tv_weight_is_the_grid_minimiser_and_grows_with_the_noise(radon32):
    from ctrobust.reconstruction.classical import select_tv_weight

    x = _blocks(32, 2).unsqueeze(1).float()
    y = radon32(x)
    gen = torch.Generator().manual_seed(1)
    noisy = y + 0.05 * y.norm() / y.numel() ** 0.5 * torch.randn(y.shape, generator=gen)
    taus = (0.01, 0.1, 1.0, 10.0, 100.0)
    quiet = select_tv_weight(radon32, y, x, taus=taus, iterations=40)
    loud = select_tv_weight(radon32, noisy, x, taus=taus, iterations=40)
    for choice, meas in ((quiet, y), (loud, noisy)):
        assert choice.errors[choice.tau] == min(choice.errors.values())  # the minimiser, not the maximiser
        rec = tv_reconstruction(radon32, meas, choice.tau, 40)  # each error is TV's at that weight: recomputed
        err = float(((rec - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean())
        assert math.isclose(choice.errors[choice.tau], err, rel_tol=1e-4)
        assert choice.n_images == 2 and choice.iterations == 40
    assert loud.tau > quiet.tau  # more noise, more regularisation
    assert loud.errors[loud.tau] < loud.errors[min(taus)]


def test_select_tv_weight_extends_a_grid_whose_best_is_at_its_edge(radon32):
    from ctrobust.reconstruction.classical import select_tv_weight

    x = _blocks(32, 1).unsqueeze(1).float()
    y = radon32(x)
    gen = torch.Generator().manual_seed(2)
    noisy = y + 0.05 * y.norm() / y.numel() ** 0.5 * torch.randn(y.shape, generator=gen)
    low = select_tv_weight(radon32, noisy, x, taus=(1e-4, 1e-3), iterations=30)
    assert max(low.errors) > 1e-3  # grew upwards past the given grid
    assert low.tau not in (1e-4, 1e-3) and low.errors[low.tau] == min(low.errors.values())
    tried = sorted(low.errors)
    assert tried.index(low.tau) < len(tried) - 1  # stopped once the best was inside
    with pytest.raises(ValueError, match="two finite weights"):
        select_tv_weight(radon32, noisy, x, taus=(1.0,))
    with pytest.raises(ValueError, match="same number"):
        select_tv_weight(radon32, noisy, torch.cat([x, x]), taus=(1.0, 2.0))
