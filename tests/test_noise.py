"""Measurement noise (ctrobust.operators.noise): the Poisson law per bin, cross-talk and read noise, Gaussian
levels, the noise-free limit, seeds, gradients, and the one measure() with per-sample seeding."""

import json
import math

import numpy as np
import pytest
import torch

from ctrobust.operators.noise import (LODOPAB_ATTENUATION, GaussianNoise, LogPoissonNoise, NoiseChain, apply_noise,
                                      attenuation_per_pixel, crosstalk, make_noise, measure, noise_from_config,
                                      sample_generator)


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


def test_mu_and_validation(small_ct):
    assert attenuation_per_pixel(128) == pytest.approx(LODOPAB_ATTENUATION / 128)
    assert LogPoissonNoise(10, image_size=64).mu == pytest.approx(21.153 / 64, rel=1e-4)
    with pytest.raises(ValueError, match="4096"):
        LogPoissonNoise(0, image_size=64)
    with pytest.raises(ValueError):
        LogPoissonNoise(10, mu=0.1, image_size=64)
    for bad in (dict(crosstalk=0.5), dict(read_noise=-1), dict(scale="log"), dict(scale="max", mu=0.1)):
        with pytest.raises(ValueError):
            LogPoissonNoise(10, **bad)
    # without a scale: usable through measure (mu from the operator's N), a clear message when called bare
    unbound = LogPoissonNoise(4096)
    with pytest.raises(ValueError, match="image_size=N"):
        unbound(torch.ones(1, 1, 2, 3))
    op, phantoms = small_ct
    x = torch.stack([phantoms[i] for i in range(2)])
    assert unbound.bind(op) == LogPoissonNoise(4096, image_size=24)
    assert torch.equal(measure(op, x, unbound, seed=1), measure(op, x, LogPoissonNoise(4096, image_size=24), seed=1))


def test_crosstalk_is_lions_three_tap_kernel():
    """A single count spreads c / (1 + 2c) to each neighbour along the detector (last) axis only; the sum is
    kept inside the detector, the edges lose what would fall outside (zero padding, as LION's conv)."""
    c = 0.05
    n = torch.zeros(1, 1, 2, 5, dtype=torch.float64)
    n[0, 0, 1, 2] = 1.0
    out = crosstalk(n, c)
    assert torch.allclose(out[0, 0, 1], torch.tensor([0, c, 1, c, 0], dtype=torch.float64) / (1 + 2 * c))
    assert torch.equal(out[0, 0, 0], torch.zeros(5, dtype=torch.float64))  # no mixing across views
    flat = crosstalk(torch.full((1, 1, 1, 4), 100.0, dtype=torch.float64), c)[0, 0, 0]
    assert torch.allclose(flat, torch.tensor([1 + c, 1 + 2 * c, 1 + 2 * c, 1 + c], dtype=torch.float64) * 100 / (1 + 2 * c))
    assert torch.equal(crosstalk(n, 0.0), n)


def test_count_statistics_with_crosstalk_and_read_noise():
    """Mean I0 exp(-mu y) (interior bins), variance rate (1 + 2c^2) / (1 + 2c)^2 + sigma^2; the weights
    inverse_std use the same variance (chi^2 of the truth 1 at high counts)."""
    noise = LogPoissonNoise(3500, mu=0.1, read_noise=5.0, crosstalk=0.05)
    y = torch.full((4000, 1, 1, 9), 3.0, dtype=torch.float64)
    n = noise.counts(y, generator=torch.Generator().manual_seed(0))[:, 0, 0, 1:-1]  # interior bins
    rate = 3500 * math.exp(-0.3)
    var = rate * (1 + 2 * 0.05 ** 2) / 1.1 ** 2 + 25.0
    assert float(n.mean()) == pytest.approx(rate, abs=4 * math.sqrt(var / n.numel()))
    assert float(n.var(0).mean()) == pytest.approx(var, rel=0.03)
    assert var < rate  # cross-talk averages: less variance than Poisson alone despite the read noise
    y_noisy = noise(y, generator=torch.Generator().manual_seed(1))[:, :, :, 1:-1]
    chi2 = ((y_noisy - 3.0) * noise.inverse_std(y_noisy)).pow(2).mean()
    assert float(chi2) == pytest.approx(1.0, abs=0.05)


def test_lion_scale_and_clip():
    """scale='max': the most attenuated ray of each sample keeps I0 / e photons, whatever the image scale."""
    noise = LogPoissonNoise(1000, scale="max", clip_negative=True)
    y = torch.rand(3, 1, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = y * torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64).reshape(3, 1, 1, 1)
    t = noise.transmission(y)
    assert torch.allclose(t.flatten(1).amin(1), torch.full((3,), 1000 / math.e, dtype=torch.float64))
    out = noise(y, generator=torch.Generator().manual_seed(2))
    assert bool((out >= 0).all())
    rel = (out - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert float(rel.max() / rel.min()) < 3  # scale-free: the same relative noise at 1x and 100x
    assert "LION" in noise.describe()


def test_gaussian_levels_are_exact():
    y = torch.ones(3, 1, 10, 20, dtype=torch.float64) * torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).reshape(3, 1, 1, 1)
    n = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    rel = GaussianNoise(level=0.1)(y, torch.Generator().manual_seed(5))
    assert torch.allclose(rel, y + 0.1 * torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).reshape(3, 1, 1, 1) * n)
    absolute = GaussianNoise(sigma=0.3)(y, torch.Generator().manual_seed(5))
    assert torch.allclose(absolute, y + 0.3 * n)
    assert torch.allclose(GaussianNoise(level=0.1).inverse_std(y)[:, 0, 0, 0], torch.tensor([10.0, 5.0, 2.5], dtype=torch.float64))
    f32 = GaussianNoise(level=0.1)(y.float(), torch.Generator().manual_seed(5))
    assert f32.dtype == torch.float32 and torch.allclose(f32.double(), rel, atol=1e-5)
    for bad in (dict(), dict(level=0.1, sigma=1.0), dict(level=-0.1), dict(sigma=float("nan"))):
        with pytest.raises(ValueError):
            GaussianNoise(**bad)


def test_configs_round_trip_and_describe():
    models = [GaussianNoise(level=0.02), GaussianNoise(sigma=0.5), LogPoissonNoise(4096, image_size=362),
              LogPoissonNoise(3500), LogPoissonNoise(1000, scale="max", read_noise=5, crosstalk=0.05, clip_negative=True),
              NoiseChain((LogPoissonNoise(4096, mu=0.1), GaussianNoise(level=0.01)))]
    for m in models:
        cfg = json.loads(json.dumps(m.to_config()))
        assert noise_from_config(cfg) == m, cfg
        assert isinstance(m.describe(), str) and m.describe()
    assert noise_from_config(None) is None
    with pytest.raises(ValueError, match="unknown noise"):
        noise_from_config({"type": "Speckle"})
    assert "cross-talk 5 %" in models[4].describe() and "sigma 5 counts" in models[4].describe()


def test_make_noise_is_the_one_place(small_ct):
    op, _ = small_ct
    assert make_noise(None) is None
    assert make_noise(4096, operator=op) == LogPoissonNoise(4096, image_size=24)
    assert make_noise(3500, read_noise=5, crosstalk=0.05, operator=op) == LogPoissonNoise(
        3500, image_size=24, read_noise=5, crosstalk=0.05)
    assert make_noise(level=0.02) == GaussianNoise(level=0.02)
    with pytest.raises(ValueError, match="photons"):
        make_noise(None, crosstalk=0.05)


# -- the one measure: per-sample seeding ------------------------------------------------------------------
@pytest.mark.parametrize("noise", [LogPoissonNoise(500, mu=0.2), GaussianNoise(level=0.05),
                                   NoiseChain((LogPoissonNoise(500, mu=0.2, read_noise=3, crosstalk=0.05),
                                               GaussianNoise(sigma=0.01)))], ids=["poisson", "gauss", "chain"])
def test_sample_noise_does_not_depend_on_the_batch(noise):
    """Sample 7's noise is the same measured alone (index 7) and in a batch of 8, and differs from sample 6's
    draw on the same data: one generator per sample, seeded from (seed, global index)."""
    y = (torch.rand(1, 1, 5, 7, generator=torch.Generator().manual_seed(0)) * 10).expand(8, 1, 5, 7).contiguous()
    batch = apply_noise(y, noise, seed=11)
    alone = apply_noise(y[7:8], noise, seed=11, indices=[7])
    assert torch.equal(batch[7:8], alone)
    assert not torch.equal(batch[6], batch[7])  # same clean data, different samples, different noise
    halves = torch.cat([apply_noise(y[:4], noise, seed=11, indices=range(4)),
                        apply_noise(y[4:], noise, seed=11, indices=range(4, 8))])
    assert torch.equal(halves, batch)
    assert not torch.equal(apply_noise(y, noise, seed=12), batch)
    assert apply_noise(y, None, seed=11) is y
    with pytest.raises(ValueError, match="indices"):
        apply_noise(y, noise, indices=[0, 1])


def test_measure_keeps_the_evaluation_stream(small_ct):
    """measure draws sample s from SeedSequence([seed, 4, s]), robustness_curve's rule before the single
    measure: the evaluation's noisy data (and the docs' dose numbers) are unchanged."""
    op, phantoms = small_ct
    x = torch.stack([phantoms[i] for i in range(3)])
    noise = LogPoissonNoise(2000, image_size=24)
    y = measure(op, x, noise, seed=1, indices=[4, 5, 6])
    clean = op(x)
    for b, s in enumerate([4, 5, 6]):
        seed = int(np.random.SeedSequence([1, 4, s]).generate_state(1)[0])
        assert torch.equal(y[b:b + 1], noise(clean[b:b + 1], generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(measure(op, x, None), clean) and not y.requires_grad
    assert torch.equal(sample_generator(1, 4).get_state(), torch.Generator().manual_seed(
        int(np.random.SeedSequence([1, 4, 4]).generate_state(1)[0])).get_state())


def test_validation_noise_does_not_depend_on_the_batch_size(small_ct):
    from ctrobust.models import FBPConvNet
    from ctrobust.training.trainer import _validate

    op, phantoms = small_ct
    f = FBPConvNet(op, channels=4, depth=1, seed=0)
    noise = LogPoissonNoise(300, image_size=24)
    a = _validate(f, op, phantoms, 1, torch.device("cpu"), torch.float32, noise=noise)
    b = _validate(f, op, phantoms, 4, torch.device("cpu"), torch.float32, noise=noise)
    free = _validate(f, op, phantoms, 4, torch.device("cpu"), torch.float32)
    assert a["val_mse"] == pytest.approx(b["val_mse"], rel=1e-4)
    assert free["val_mse"] != pytest.approx(b["val_mse"], rel=1e-4)


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


def test_commands_build_the_noise_in_one_place(small_ct):
    """app.inputs.noise_model (train, attack, evaluate, demo) goes through make_noise; bad values exit 1."""
    from types import SimpleNamespace

    from ctrobust.app.inputs import noise_model
    from ctrobust.errors import CtrobustError

    op, _ = small_ct
    assert noise_model(SimpleNamespace(photons=None), op) is None
    assert noise_model(SimpleNamespace(photons=4096.0), op) == LogPoissonNoise(4096, image_size=24)
    assert noise_model(SimpleNamespace(photons=3500.0, read_noise=5.0, crosstalk=0.05), op) == LogPoissonNoise(
        3500, image_size=24, read_noise=5.0, crosstalk=0.05)
    with pytest.raises(CtrobustError, match="photons"):
        noise_model(SimpleNamespace(photons=None, crosstalk=0.05), op)
    with pytest.raises(CtrobustError, match="photons"):
        noise_model(SimpleNamespace(photons=-1.0), op)


def test_robustness_curve_records_the_bound_noise(small_ct):
    from ctrobust.attacks import AttackSettings
    from ctrobust.evaluation.robustness import robustness_curve
    from ctrobust.reconstruction.methods import FBPReconstruction

    op, phantoms = small_ct
    res = robustness_curve(FBPReconstruction(op), phantoms, op, [0.0], AttackSettings(steps=1), batch_size=2, progress=False,
                           max_samples=2, noise=LogPoissonNoise(2000))
    assert res.config["noise"]["mu"] == pytest.approx(LODOPAB_ATTENUATION / 24)
    bound = robustness_curve(FBPReconstruction(op), phantoms, op, [0.0], AttackSettings(steps=1), batch_size=2, progress=False,
                             max_samples=2, noise=LogPoissonNoise(2000, image_size=24))
    assert [r["sq_error"] for r in res.rows] == [r["sq_error"] for r in bound.rows]
