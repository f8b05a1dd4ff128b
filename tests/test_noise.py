"""The low-dose noise model (ctrobust.operators.noise): the Poisson law per bin, the noise-free limit, seeds, gradients."""

import math

import pytest
import torch

from ctrobust.operators.noise import LODOPAB_ATTENUATION, LogPoissonNoise, attenuation_per_pixel


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


def test_inverse_std_whitens_the_noise():
    """Weighted by inverse_std (evaluated at the noisy measurement), the noise has unit variance per bin:
    the chi^2 of the truth is 1. A weight without mu, or without the square root, is off by orders."""
    noise = LogPoissonNoise(4096, image_size=64)
    y = torch.rand(4, 1, 30, 90, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 18  # mu y <= 6
    y_noisy = noise(y, generator=torch.Generator().manual_seed(4))
    w = noise.inverse_std(y_noisy)
    assert w.shape == y.shape and w.dtype == torch.float64 and bool((w > 0).all()) and not w.requires_grad
    chi2 = ((y_noisy - y) * w).pow(2).mean()
    assert float(chi2) == pytest.approx(1.0, abs=0.05)
    assert torch.allclose(w, noise.mu * torch.sqrt(noise.photons * torch.exp(-noise.mu * y_noisy)).clamp_min(noise.mu))


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


# -- the dose condition of the robustness curve, and the attack on noisy data --------------------------
@pytest.fixture(scope="module")
def small_ct():
    from ctrobust.data.phantoms import PhantomDataset
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.operators.radon import RadonTransform

    return RadonTransform(ParallelBeam2D(24, 12)), PhantomDataset(4, 24, seed=3)


def test_robustness_curve_with_noise_has_a_dose_line(small_ct):
    from ctrobust.attacks import AttackSettings
    from ctrobust.reconstruction.methods import FBPReconstruction
    from ctrobust.evaluation.robustness import robustness_curve

    op, phantoms = small_ct
    noise = LogPoissonNoise(2000, image_size=24)
    kw = dict(batch_size=2, progress=False, max_samples=3, noise=noise, linearization=False)
    res = robustness_curve(FBPReconstruction(op), phantoms, op, [0.0, 0.02], AttackSettings(steps=6, seed=1), **kw)
    assert res.config["noise"]["photons"] == 2000
    by = {(r["eps"], r["condition"], r["sample"]): r for r in res.rows}
    assert {c for _, c, _ in by} == {"clean", "dose", "random", "attack"}
    for s in range(3):
        dose, clean = by[(0.0, "dose", s)], by[(0.0, "clean", s)]
        assert dose["perturbation_norm"] > 0 and clean["perturbation_norm"] == 0
        assert dose["sq_error"] > clean["sq_error"]  # the noise itself costs accuracy
        assert by[(0.0, "attack", s)]["sq_error"] == dose["sq_error"]  # eps 0: the measured data
        assert by[(0.02, "attack", s)]["sq_error"] > dose["sq_error"]  # the attack perturbs the noisy y
        assert by[(0.02, "dose", s)]["sq_error"] == dose["sq_error"]
    # the noise per sample does not depend on the batch size
    again = robustness_curve(FBPReconstruction(op), phantoms, op, [0.0], AttackSettings(steps=6, seed=1),
                             **{**kw, "batch_size": 3})
    assert [r["sq_error"] for r in again.rows if r["condition"] == "dose"] == pytest.approx(
        [by[(0.0, "dose", s)]["sq_error"] for s in range(3)], rel=1e-5)


def test_attack_gradients_flow_on_noisy_data(small_ct):
    from ctrobust.attacks import AttackSettings, pga_attack
    from ctrobust.reconstruction.methods import FBPReconstruction

    op, phantoms = small_ct
    x = torch.stack([phantoms[i] for i in range(2)])
    y = LogPoissonNoise(1000, image_size=24)(op(x), generator=torch.Generator().manual_seed(0))
    f = FBPReconstruction(op)
    d = torch.zeros_like(y, requires_grad=True)
    loss = (f(y + d) - x).pow(2).sum()
    (g,) = torch.autograd.grad(loss, d)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    res = pga_attack(f, y, x, 0.02, AttackSettings(steps=5), generator=torch.Generator().manual_seed(0))
    base = (f(y) - x).pow(2).flatten(1).sum(1)
    assert bool((res.error.to(base.dtype) > base).all())


def test_training_on_low_dose_data_is_seeded(tmp_path):
    from ctrobust.app import TrainSpec, run_train

    def train(name, photons):
        spec = TrainSpec(photons=photons, size=16, angles=8, max_steps=2, n_train=8, n_val=4, channels=4, depth=1,
                         batch_size=4, device="cpu", out=str(tmp_path / name), progress=False)
        return run_train(spec)

    a, b, free = train("a", 500.0), train("b", 500.0), train("free", None)
    va, vb, vf = (r.validation[-1] for r in (a, b, free))
    assert va["val_mse"] == vb["val_mse"]  # same seed, same noise, same weights
    assert va["val_mse"] != vf["val_mse"]
    ckpt = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    assert ckpt["run"]["train_config"]["photons"] == 500.0
