"""Test-time training on a tiny, deliberately shifted CT problem."""

import warnings

import numpy as np
import pytest
import torch

import ctrobust.reconstruction.ttt as ttt

warnings.filterwarnings("ignore", message="Sparse")


def _rel(a, b):
    return ((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).numpy()


@pytest.fixture(scope="module")
def shifted():
    """A tiny FBPConvNet trained at 20 views, rebuilt on an 8-view operator (a geometry shift)."""
    from ctrobust import ParallelBeam2D, RadonTransform
    from ctrobust.data.phantoms import random_ellipses
    from ctrobust.models import FBPConvNet

    op20 = RadonTransform(ParallelBeam2D(32, 20))
    op8 = RadonTransform(ParallelBeam2D(32, 8))
    f = FBPConvNet(op20, channels=4, depth=1, seed=0)
    x = torch.from_numpy(random_ellipses(12, 32, 0))[:, None]
    y = op20(x)
    opt = torch.optim.Adam(f.parameters(), 1e-2)
    for _ in range(100):
        loss = ((f(y) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = FBPConvNet(op8, channels=4, depth=1, seed=1)
    g.load_state_dict(f.state_dict())
    g.eval()
    x_test = torch.from_numpy(random_ellipses(2, 32, 5))[:, None]
    return g, op8, x_test, op8(x_test)


def test_ttt_improves_consistency_and_image_and_leaves_f_alone(shifted, global_rng_untouched):
    f, op, x, y = shifted
    before = {k: v.clone() for k, v in f.state_dict().items()}
    flags = [p.requires_grad for p in f.parameters()]
    with torch.no_grad():
        plain = f(y)
    rec, infos = ttt.test_time_train(f, op, y, steps=60, lr=1e-3, patience=20, seed=0)
    assert rec.shape == x.shape and not rec.requires_grad
    consistency = ttt.data_consistency(op, rec, y).numpy()
    assert np.all(consistency < ttt.data_consistency(op, plain, y).numpy())
    assert np.all(_rel(rec, x) < _rel(plain, x))
    for info, c in zip(infos, consistency):
        assert info.best_step > 0 and info.consistency_after == pytest.approx(float(c), rel=1e-5)
        assert info.heldout[info.best_step] == min(info.heldout)
    # the original network is untouched, and its operator was shared, not copied
    assert all(torch.equal(before[k], v) for k, v in f.state_dict().items())
    assert flags == [p.requires_grad for p in f.parameters()] and not f.training
    assert ttt.copy_model(f).operator is f.operator


def test_ttt_early_stopping_and_determinism(shifted):
    f, op, x, y = shifted
    rec1, (info,) = ttt.test_time_train(f, op, y[:1], steps=200, lr=3e-3, patience=3)
    rec2, _ = ttt.test_time_train(f, op, y[:1], steps=200, lr=3e-3, patience=3)
    assert torch.equal(rec1, rec2)
    assert info.stopped_early and info.steps_run < 200
    assert len(info.heldout) == info.best_step + 3 + 1


def test_ttt_weights_weigh_the_data_terms(shifted):
    f, op, x, y = shifted
    plain, (i_plain,) = ttt.test_time_train(f, op, y[:1], steps=4, lr=1e-3)
    # the loss is normalised by the weighted data: a constant weight changes nothing
    same, (i_same,) = ttt.test_time_train(f, op, y[:1], steps=4, lr=1e-3, weights=torch.full_like(y[:1], 3.0))
    assert torch.allclose(same, plain, rtol=1e-5, atol=1e-6) and i_same.loss == pytest.approx(i_plain.loss, rel=1e-5)
    # non-uniform weights: the first loss is sum(w |y - A f| kept) / sum(w |y| kept), recomputed by hand
    w = torch.rand(y[:1].shape, generator=torch.Generator().manual_seed(5)) + 0.1
    _, (info,) = ttt.test_time_train(f, op, y[:1], steps=1, lr=1e-3, weights=w)
    from ctrobust.reconstruction.holdout import holdout_mask

    keep = ~holdout_mask((1, *op.range_shape), 0.05, torch.Generator().manual_seed(0))
    with torch.no_grad():
        r = (y[:1] - op(f(ttt.fill_heldout(y[:1], ~keep)))).abs()
    expected = float((w * r * keep).sum() / (w * y[:1].abs() * keep).sum())
    assert info.loss[0] == pytest.approx(expected, rel=1e-5) and info.loss[0] != pytest.approx(i_plain.loss[0], rel=1e-3)
    for bad, match in ((torch.full_like(w, float("nan")), "finite"), (-w, ">= 0"), (w[..., :3], "shaped like y")):
        with pytest.raises(ValueError, match=match):
            ttt.test_time_train(f, op, y[:1], steps=1, weights=bad)


def test_shift_evaluation_weights_ttt_by_the_noise_model(shifted, monkeypatch):
    """With a low-dose noise model the TTT loss is weighted by 1 / std of the noise; without, unweighted."""
    from ctrobust.operators.noise import LogPoissonNoise
    from ctrobust.evaluation.shift import Condition, evaluate_condition

    f, op, x, y = shifted
    seen = []

    def spy(f_, op_, yb, **options):
        seen.append(options)
        return f_(yb).detach(), [ttt.TTTInfo()]

    monkeypatch.setattr(ttt, "test_time_train", spy)
    noise = LogPoissonNoise(4096, image_size=32)
    evaluate_condition(f, Condition("low dose", x[:1], op, noise_model=noise), ttt=True)
    evaluate_condition(f, Condition("noise-free", x[:1], op), ttt=True)
    y_noisy = Condition("low dose", x[:1], op, noise_model=noise).measurements()
    assert torch.allclose(seen[0]["weights"], noise.inverse_std(y_noisy))
    assert "weights" not in seen[1]


def test_fill_heldout_hides_the_held_out_values():
    y = torch.arange(12.0).reshape(1, 1, 2, 6) ** 2
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[0, 0, 0, 2] = mask[0, 0, 1, 5] = True
    out = ttt.fill_heldout(y, mask)
    assert float(out[0, 0, 0, 2]) == pytest.approx((1 + 9) / 2)  # linear between bins 1 and 3
    assert float(out[0, 0, 1, 5]) == pytest.approx(float(y[0, 0, 1, 4]))  # constant beyond the end
    assert torch.equal(out[~mask], y[~mask])
    vec = torch.ones(2, 5)
    vmask = torch.tensor([[False, True, False, False, False]] * 2)
    assert torch.equal(ttt.fill_heldout(vec, vmask), vec.masked_fill(vmask, 0.0))
    with pytest.raises(ValueError, match="fill"):
        ttt.fill_heldout(vec, vmask, "mean")


def test_ttt_rejects_bad_input(shifted):
    f, op, x, y = shifted
    with pytest.raises(TypeError, match="nn.Module"):
        ttt.test_time_train(lambda v: op.fbp(v), op, y)
    with pytest.raises(ValueError, match="steps"):
        ttt.test_time_train(f, op, y, steps=0)
    with pytest.raises(ValueError, match="shape"):
        ttt.test_time_train(f, op, y[:, :, :3])
