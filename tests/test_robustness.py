"""Robustness curves: table structure, the ball, agreement with metrics, reproducibility, linear worst case."""

import numpy as np
import pytest
import torch

from ctrobust.attacks import AttackSettings
from ctrobust.evaluation import metrics
from ctrobust.reconstruction.methods import FBPReconstruction, build_method, register_method, METHODS
from ctrobust.evaluation.robustness import (CONDITIONS, VERIFY_RESTARTS, VERIFY_SEED, VERIFY_STEPS, clean_metrics,
                                            robustness_curve, summarize, verification_settings, verify_attack)


@pytest.fixture(scope="module")
def radon():
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.operators.radon import RadonTransform

    return RadonTransform(ParallelBeam2D(24, 12))


@pytest.fixture(scope="module")
def phantoms():
    from ctrobust.data.phantoms import PhantomDataset

    return PhantomDataset(5, 24, seed=3)


@pytest.fixture(scope="module")
def fbp_curve(radon, phantoms):
    return robustness_curve(FBPReconstruction(radon), phantoms, radon, [0.0, 0.01, 0.03],
                            AttackSettings(steps=8, seed=1), batch_size=2, progress=False, max_samples=3,
                            linearization=False)


def test_table_structure_and_ball(fbp_curve, radon, phantoms):
    res = fbp_curve
    assert len(res.rows) == 3 * 3 * len(CONDITIONS)
    assert sorted({r["sample"] for r in res.rows}) == [0, 1, 2]
    ys = radon(torch.stack([phantoms[i] for i in range(3)]))
    norms = ys.flatten(1).double().norm(dim=1).numpy()
    for r in res.rows:
        if r["eps"] == 0 or r["condition"] == "clean":
            assert r["perturbation_norm"] == 0 and r["deviation"] == 0
            continue
        radius = r["eps"] * norms[r["sample"]]
        assert r["radius"] == pytest.approx(radius, rel=1e-5)
        if r["condition"] == "random":
            assert r["perturbation_norm"] == pytest.approx(radius, rel=1e-5)
        else:
            assert r["perturbation_norm"] <= radius * (1 + 1e-5)
    # clean rows repeat the same values at each eps; at eps = 0 every condition is the clean one
    clean = {(r["eps"], r["sample"]): r["mse"] for r in res.rows if r["condition"] == "clean"}
    for s in range(3):
        assert clean[(0.0, s)] == clean[(0.01, s)] == clean[(0.03, s)]
    zero = [r for r in res.rows if r["eps"] == 0]
    for r in zero:
        assert r["mse"] == clean[(0.0, r["sample"])]


def test_attack_beats_noise_and_grows_with_eps(fbp_curve):
    _, attack, _ = fbp_curve.curve("sq_error", "attack")
    _, noise, _ = fbp_curve.curve("sq_error", "random")
    _, clean, _ = fbp_curve.curve("sq_error", "clean")
    assert attack[0] == pytest.approx(clean[0])
    assert np.all(np.diff(attack) > 0)
    assert np.all(attack[1:] > noise[1:])
    eps, psnr, _ = fbp_curve.curve("psnr", "attack")
    assert list(eps) == [0.0, 0.01, 0.03] and np.all(np.diff(psnr) < 0)


def test_rows_agree_with_metrics_and_summary(fbp_curve, radon, phantoms):
    x = torch.stack([phantoms[i] for i in range(3)])
    rec = radon.fbp(radon(x))
    expected = metrics.all_metrics(rec, x)
    rows = sorted((r for r in fbp_curve.rows if r["condition"] == "clean" and r["eps"] == 0), key=lambda r: r["sample"])
    for name in ("mse", "relative_error", "psnr", "ssim"):
        np.testing.assert_allclose([r[name] for r in rows], expected[name], rtol=1e-5)
    np.testing.assert_allclose([r["sq_error"] for r in rows], expected["mse"] * 24 * 24, rtol=1e-5)
    for s in fbp_curve.summary:
        members = [r["psnr"] for r in fbp_curve.rows if r["eps"] == s["eps"] and r["condition"] == s["condition"]]
        assert s["n"] == 3
        assert s["psnr_mean"] == pytest.approx(np.mean(members)) and s["psnr_std"] == pytest.approx(np.std(members))


def test_reproducible_and_global_rng_untouched(radon, phantoms, fbp_curve, global_rng_untouched):
    again = robustness_curve(FBPReconstruction(radon), phantoms, radon, [0.0, 0.01, 0.03],
                             AttackSettings(steps=8, seed=1), batch_size=2, progress=False, max_samples=3,
                             linearization=False)
    assert [r["sq_error"] for r in again.rows] == [r["sq_error"] for r in fbp_curve.rows]
    other = robustness_curve(FBPReconstruction(radon), phantoms, radon, [0.01], AttackSettings(steps=8, seed=2),
                             batch_size=2, progress=False, max_samples=3, linearization=False)
    first = [r["sq_error"] for r in fbp_curve.rows if r["eps"] == 0.01 and r["condition"] == "random"]
    assert [r["sq_error"] for r in other.rows if r["condition"] == "random"] != first


def test_linear_cs_reconstruction_worst_deviation():
    """f = A^+ on a Gaussian CS operator, target clean: the deviation reaches r^2 / sigma_min(A)^2."""
    from ctrobust.models import LinearReconstruction
    from ctrobust.operators.cs import GaussianCS

    op = GaussianCS(40, (8, 8), seed=0)
    a = op.to_dense()
    b = torch.linalg.pinv(a)
    f = LinearReconstruction(40, 64, init=b, dtype=torch.float64)

    class Images:
        image_size = 8

        def __len__(self):
            return 3

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return torch.rand(1, 8, 8, generator=g, dtype=torch.float64)

    res = robustness_curve(f, Images(), op, [0.05], AttackSettings(steps=100, step_size=0.5, target="clean"),
                           progress=False, linearization=False)
    smax = torch.linalg.svdvals(b)[0].item()
    attack = [r for r in res.rows if r["condition"] == "attack"]
    for r in attack:
        bound = r["radius"] ** 2 * smax**2
        assert 0.99 * bound <= r["deviation"] <= bound * (1 + 1e-9)
    assert "psnr" in attack[0]  # vector outputs are viewed as the operator's 8 x 8 images


def test_clean_metrics_matches_fbp(radon, phantoms):
    rows, summary = clean_metrics(FBPReconstruction(radon), phantoms, radon, batch_size=4, progress=False)
    x = torch.stack([phantoms[i] for i in range(len(phantoms))])
    expected = metrics.psnr(radon.fbp(radon(x)), x)
    np.testing.assert_allclose([r["psnr"] for r in rows], expected, rtol=1e-5)
    assert summary["n"] == 5 and summary["psnr_mean"] == pytest.approx(expected.mean(), rel=1e-5)


def test_bad_arguments(radon, phantoms):
    f = FBPReconstruction(radon)
    with pytest.raises(ValueError, match="eps_grid"):
        robustness_curve(f, phantoms, radon, [-0.1], progress=False)
    with pytest.raises(ValueError, match="empty"):
        robustness_curve(f, phantoms, radon, [0.0], progress=False, max_samples=0)
    with pytest.raises(ValueError, match="settings.norm must be 'l2'"):
        robustness_curve(f, phantoms, radon, [0.01], AttackSettings(norm="linf"), progress=False)
    with pytest.raises(TypeError, match="AttackSettings"):
        robustness_curve(f, phantoms, radon, [0.01], {"steps": 3}, progress=False)


def test_curve_records_its_settings_and_verify_keeps_the_curves_objective(radon, phantoms, fbp_curve):
    """The config holds the settings' record; verification attacks the same objective with a larger budget."""
    settings = AttackSettings(steps=8, seed=1)
    curve = fbp_curve
    assert {k: curve.config[k] for k in settings.to_config()} == settings.to_config()
    assert AttackSettings.from_config(curve.config) == settings
    assert curve.config["linearization"] is False
    strong = verification_settings(curve.config)
    assert strong == settings.replace(steps=VERIFY_STEPS, restarts=VERIFY_RESTARTS, seed=VERIFY_SEED)
    f = FBPReconstruction(radon)
    with pytest.raises(ValueError, match="settings.target is 'clean' but the curve was measured with 'truth'"):
        verify_attack(f, phantoms, radon, curve, 1, strong.replace(target="clean"))
    with pytest.raises(ValueError, match="settings.relative"):
        verify_attack(f, phantoms, radon, curve, 1, strong.replace(relative=False))
    rows = verify_attack(f, phantoms, radon, curve, 1, strong.replace(steps=4, restarts=1))
    assert [r["eps"] for r in rows] == [0.01, 0.03] and rows[0]["passes_strong"] == 4
    assert all(r["ratio_min"] <= 1 for r in rows)


def test_summarize_groups():
    rows = [{"eps": 0.1, "condition": "attack", "mse": 1.0}, {"eps": 0.1, "condition": "attack", "mse": 3.0},
            {"eps": 0.2, "condition": "attack", "mse": 5.0}]
    out = summarize(rows)
    assert out[0] == {"eps": 0.1, "condition": "attack", "n": 2, "mse_mean": 2.0, "mse_std": 1.0}
    assert out[1]["n"] == 1 and out[1]["mse_std"] == 0.0


def test_method_registry(radon):
    from ctrobust.errors import CtrobustError

    assert isinstance(build_method("fbp", radon), FBPReconstruction)
    with pytest.raises(CtrobustError, match="unknown method 'nope'"):
        build_method("nope", radon)
    register_method("half-fbp-test", lambda operator, **kw: (lambda y: 0.5 * operator.fbp(y)))
    try:
        y = radon(torch.ones(1, 1, 24, 24))
        torch.testing.assert_close(build_method("half-fbp-test", radon)(y), 0.5 * radon.fbp(y))
        with pytest.raises(ValueError, match="already registered"):
            register_method("half-fbp-test", lambda operator: None)
    finally:
        METHODS.pop("half-fbp-test")
