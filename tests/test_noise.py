"""The low-dose noise model (ctrobust.noise): the Poisson law per bin, the noise-free limit, seeds, gradients."""

import math

import pytest
import torch

from ctrobust.noise import LODOPAB_ATTENUATION, LogPoissonNoise, attenuation_per_pixel


def test_counts_follow_the_poisson_law_per_bin():
    noise = LogPoissonNoise(200.0, image_size=32)
    y = torch.linspace(0.0, 8.0, 12, dtype=torch.float64).reshape(1, 1, 3, 4)  # mu y from 0 to ~5.3
    draws = 4000
    gen = torch.Generator().manual_seed(1)
    y_noisy = noise(y.expand(draws, 1, 3, 4), generator=gen)
    counts = noise.photons * torch.exp(-noise.mu * y_noisy)  # invert the log (exact where N >= 1)
    rate = noise.transmission(y)[0]
    mean, var = counts.mean(0), counts.var(0)
    # the clamp max(N, 1) only moves N = 0 to 1: include it in the expected mean
    p0 = torch.exp(-rate)
    expected_mean = rate + p0
    z_mean = (mean - expected_mean) / torch.sqrt(rate / draws)
    assert z_mean.abs().max() < 4.5, z_mean
    # variance of a sample variance of a Poisson(r): (r + 2 r^2 (n / (n - 1))) / n ~ (r + 2 r^2) / n
    ok = rate > 5  # bins where the clamp is negligible
    z_var = (var - rate)[ok] / torch.sqrt((rate + 2 * rate**2)[ok] / draws)
    assert z_var.abs().max() < 4.5, z_var


def test_noise_free_limit_and_level():
    y = torch.rand(2, 1, 6, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 30
    errors = []
    for photons in (1e3, 1e5, 1e7, 1e9):
        noise = LogPoissonNoise(photons, image_size=64)
        y_noisy = noise(y, generator=torch.Generator().manual_seed(2))
        rel = float((y_noisy - y).norm() / y.norm())
        errors.append(rel)
        predicted = float(noise.relative_level(y).mean())
        if photons >= 1e5:  # first order holds where few bins starve (mu y here reaches ~10)
            assert rel == pytest.approx(predicted, rel=0.2)
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-3 and errors[0] / errors[-1] > 100 * 0.5  # ~ 1 / sqrt(I0)


def test_seeded_batched_and_dtype():
    noise = LogPoissonNoise(1000, mu=0.1, read_noise=2.0)
    y = torch.rand(3, 1, 4, 5) * 20
    a = noise(y, generator=torch.Generator().manual_seed(7))
    b = noise(y, generator=torch.Generator().manual_seed(7))
    c = noise(y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == y.shape
    assert torch.equal(noise(y), noise(y))  # no generator: a fresh one seeded 0, never the global RNG
    assert float(a.max()) <= math.log(1000) / 0.1 + 1e-3  # photon starvation clamp
    y64 = y.double()
    assert noise(y64, generator=torch.Generator().manual_seed(7)).dtype == torch.float64


def test_mu_and_validation():
    assert attenuation_per_pixel(128) == pytest.approx(LODOPAB_ATTENUATION / 128)
    assert LogPoissonNoise(10, image_size=64).mu == pytest.approx(21.153 / 64, rel=1e-4)
    with pytest.raises(ValueError):
        LogPoissonNoise(0, image_size=64)
    with pytest.raises(ValueError):
        LogPoissonNoise(10)
    with pytest.raises(ValueError):
        LogPoissonNoise(10, mu=0.1, image_size=64)


def test_gradient_is_straight_through():
    noise = LogPoissonNoise(500, image_size=16)
    y = (torch.rand(2, 1, 3, 4) * 5).requires_grad_()
    out = noise(y, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad(out.sum(), y)
    assert torch.equal(g, torch.ones_like(y))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_numbers_on_cuda():
    noise = LogPoissonNoise(1000, image_size=32)
    y = torch.rand(2, 1, 4, 5) * 10
    cpu = noise(y, generator=torch.Generator().manual_seed(3))
    gpu = noise(y.cuda(), generator=torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu)
