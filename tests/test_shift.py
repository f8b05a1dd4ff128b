"""Distribution-shift evaluation: the conditions' measurement noise, rebuilding on another geometry, gap closed."""

import math
import warnings

import numpy as np
import pytest
import torch

from ctrobust.evaluation import shift
from ctrobust.reconstruction.ttt import copy_model

warnings.filterwarnings("ignore", message="Sparse")


@pytest.fixture(scope="module")
def setup():
    from ctrobust import ParallelBeam2D, RadonTransform
    from ctrobust.data.phantoms import random_ellipses
    from ctrobust.models import FBPConvNet

    op = RadonTransform(ParallelBeam2D(32, 16))
    f = FBPConvNet(op, channels=4, depth=1, seed=0).eval()
    x = torch.from_numpy(random_ellipses(2, 32, 3))[:, None]
    return f, op, x


def test_condition_noise_level_and_seed(setup, global_rng_untouched):
    """The relative level is exact per sample (sigma_b = level * RMS(A x_b), from the sample's own generator),
    the same seed gives the same data, a sample's noise does not depend on the batch it is measured in."""
    from ctrobust.operators.noise import sample_generator

    _, op, x = setup
    clean = op(x.reshape(2, *op.domain_shape))
    cond = shift.Condition("n", x, op, 0.1, seed=5)
    noisy = cond.measurements()
    for b in range(2):
        rms = clean[b].double().norm() / math.sqrt(clean[b].numel())
        n = torch.randn(clean[b:b + 1].shape, generator=sample_generator(5, b), dtype=torch.float64)
        assert torch.allclose(noisy[b:b + 1].double(), clean[b:b + 1].double() + 0.1 * rms * n, atol=1e-5)
    assert torch.equal(noisy, cond.measurements())
    # (the forward projection itself differs by float rounding between batch sizes, ~1e-5 here)
    assert torch.allclose(noisy[:1], shift.Condition("n", x[:1], op, 0.1, seed=5).measurements(), atol=1e-4)
    assert not torch.allclose(noisy, shift.Condition("n", x, op, 0.1, seed=6).measurements(), atol=1e-2)
    assert torch.equal(shift.Condition("free", x, op).measurements(), clean)
    with pytest.raises(ValueError, match="noise"):
        shift.Condition("bad", x, op, -1.0).measurements()


def test_condition_dose_then_gaussian_from_one_stream(setup):
    """With a dose model the relative Gaussian noise comes on top, drawn after the dose from the same
    per-sample generator; without the Gaussian the dose data are robustness_curve's (same seeds)."""
    from ctrobust.operators.noise import GaussianNoise, LogPoissonNoise, NoiseChain, measure

    _, op, x = setup
    dose = LogPoissonNoise(2000, image_size=32)
    xs = x.reshape(2, *op.domain_shape)
    only_dose = shift.Condition("d", x, op, 0.0, seed=3, noise_model=dose).measurements()
    assert torch.equal(only_dose, measure(op, xs, dose, 3))
    both = shift.Condition("dg", x, op, 0.05, seed=3, noise_model=dose).measurements()
    assert torch.equal(both, measure(op, xs, NoiseChain((dose, GaussianNoise(level=0.05))), 3))
    assert not torch.equal(both, only_dose)


def test_gap_closed_formula():
    # hand-computed: (0.85 - 0.8) / (0.9 - 0.8) = 0.5, (0.92 - 0.8) / 0.1 = 1.2, (0.7 - 0.8) / 0.1 = -1
    assert shift.gap_closed(0.9, 0.8, 0.85) == pytest.approx(0.5)
    assert shift.gap_closed(0.9, 0.8, 0.7) == pytest.approx(-1.0)
    assert shift.gap_closed(0.9, 0.8, 0.92) == pytest.approx(1.2)
    assert math.isnan(shift.gap_closed(0.9, 0.9, 0.95))


def test_views_shift_rebuilds_with_same_weights(setup):
    f0, op, x = setup
    f = copy_model(f0)  # shares the operator
    with torch.no_grad():  # a non-zero U-Net head: the rebuilt network's U-Net term must be there and be f's
        gen = torch.Generator().manual_seed(3)
        for p in (f.unet.head.weight, f.unet.head.bias):
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    in_dist, shifted, g = shift.make_shift("views", f, x, n_angles=6)
    assert shifted.operator.range_shape == (1, 6, op.geometry.n_detectors)
    assert g.operator is shifted.operator and f.operator is op
    assert all(torch.equal(a, b) for a, b in zip(f.state_dict().values(), g.state_dict().values()))
    y = shifted.measurements()
    with torch.no_grad():
        x0 = shifted.operator.fbp(y)
        u = f.unet(x0)
        assert float(u.abs().max()) > 1e-2
        torch.testing.assert_close(g(y), x0 + u, rtol=0, atol=1e-6)
        assert float((g(y) - x0).abs().max()) > 1e-2
    with pytest.raises(ValueError, match="n_angles"):
        shift.make_shift("views", f, x)
    with pytest.raises(ValueError, match="unknown shift"):
        shift.make_shift("anatomy", f, x)


def test_distribution_shift_reports_gap_for_noise_shift(setup):
    f, op, x = setup
    fbp = shift.rebuild_on_operator(f, op)
    in_dist, shifted, g = shift.make_shift("noise", fbp, x, noise=0.2)
    res = shift.distribution_shift(fbp, in_dist, shifted, f_shifted=g, ttt=True,
                                   ttt_options=dict(steps=3, lr=1e-3, patience=2))
    s = res.summary()
    # heavy noise lowers SSIM; the summary's gap and gap-closed follow from the per-sample metrics
    assert s["ssim_shifted"] < s["ssim_in_dist"]
    assert s["ssim_gap"] == pytest.approx(np.mean(res.in_dist["ssim"]) - np.mean(res.shifted["ssim"]))
    ssim_in, ssim_shifted, ssim_ttt = (np.mean(res.in_dist["ssim"]), np.mean(res.shifted["ssim"]),
                                       np.mean(res.ttt["ssim"]))
    assert s["ssim_ttt"] == pytest.approx(ssim_ttt)
    assert s["gap_closed"] == pytest.approx((ssim_ttt - ssim_shifted) / (ssim_in - ssim_shifted))
    assert len(res.ttt["consistency_after"]) == 2
    d = res.to_dict()
    assert set(d) == {"summary", "options", "in_dist", "shifted", "ttt"} and len(d["shifted"]["ssim"]) == 2


def test_data_shift_checks_sizes(setup):
    f, op, x = setup
    with pytest.raises(ValueError, match="shifted_images"):
        shift.make_shift("data", f, x)
    with pytest.raises(ValueError, match="same size"):
        shift.make_shift("data", f, x, shifted_images=torch.zeros(1, 1, 16, 16))
    other = torch.flip(x, dims=[-1])
    in_dist, shifted, g = shift.make_shift("data", f, x, shifted_images=other)
    assert g is f and torch.equal(shifted.images, other)


def test_stack_images():
    from ctrobust.data.phantoms import PhantomDataset

    imgs = shift.stack_images(PhantomDataset(3, 16, 0), 2)
    assert imgs.shape == (2, 1, 16, 16) and imgs.dtype == torch.float32
