"""Operator mismatch (ctrobust.operators.mismatch, ctrobust.evaluation.mismatch_sweep): exact adjoint pairs, A at zero mismatch,
the conventions of each mismatch, and the evaluation table."""

import math

import numpy as np
import pytest
import torch

from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.operators.mismatch import MismatchedRadon, view_fill_matrix
from ctrobust.operators.radon import RadonTransform


@pytest.fixture(scope="module")
def nominal():
    return RadonTransform(ParallelBeam2D(20, 16))


def _x(n=20, b=2, seed=0):
    return torch.rand(b, 1, n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_zero_mismatch_is_A_exactly(nominal):
    x = _x()
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(MismatchedRadon(nominal)(x.to(dtype)), nominal(x.to(dtype)))
    y = nominal(x)
    assert torch.equal(MismatchedRadon(nominal, missing=[]).adjoint(y), nominal.adjoint(y))


@pytest.mark.parametrize("kw", [dict(angle_offset=0.02), dict(detector_shift=0.7), dict(gain_std=0.05),
                                dict(missing_views=3), dict(missing_views=3, fill="zero"),
                                dict(angle_offset=-0.01, detector_shift=-1.3, gain_std=0.02, missing_views=2)])
def test_exact_adjoint_pair(nominal, kw):
    op = MismatchedRadon(nominal, seed=4, **kw)
    assert op.dot_test(dtype=torch.float64) < 1e-12
    assert op.dot_test(dtype=torch.float32) < 1e-4
    x = _x().requires_grad_()
    v = torch.rand(2, *op.range_shape, dtype=torch.float64)
    (g,) = torch.autograd.grad((op(x) * v).sum(), x)
    assert torch.allclose(g, op.adjoint(v))
    assert not torch.equal(op(x.detach()), nominal(x.detach()))


def test_each_mismatch_means_what_it_says(nominal):
    x = _x(b=1)
    y = nominal(x)[0, 0]
    g = nominal.geometry
    # one full angular step of offset: view i sees what the nominal view i + 1 sees
    step = g.angle_range / g.n_angles
    ya = MismatchedRadon(nominal, angle_offset=step)(x)[0, 0]
    assert torch.allclose(ya[:-1], y[1:], atol=1e-3 * float(y.abs().max()))
    # detector shifted by one bin: bin j measures the nominal bin j + 1
    ys = MismatchedRadon(nominal, detector_shift=1.0)(x)[0, 0]
    assert torch.allclose(ys[:, 2:-3], y[:, 3:-2], atol=1e-3 * float(y.abs().max()))
    # gains per detector column
    op = MismatchedRadon(nominal, gain_std=0.1, seed=1)
    assert torch.allclose(op(x)[0, 0], y * torch.as_tensor(op.gains))
    assert len(op.gains) == g.n_detectors and 0.5 < float(np.std(op.gains)) / 0.1 < 1.5
    # missing views: interpolated between acquired neighbours, or zero
    op = MismatchedRadon(nominal, missing=[3, 4, 0])
    ym = op(x)[0, 0]
    assert torch.allclose(ym[3], (2 * y[2] + y[5]) / 3) and torch.allclose(ym[4], (y[2] + 2 * y[5]) / 3)
    assert torch.allclose(ym[0], y[1]) and torch.equal(ym[7], y[7])
    assert float(MismatchedRadon(nominal, missing=[3], fill="zero")(x)[0, 0, 3].abs().max()) == 0.0


def test_view_fill_matrix_and_validation(nominal):
    m = view_fill_matrix(5, [1, 2])
    assert np.allclose(m.sum(1), 1.0) and m[1, 0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        view_fill_matrix(3, [0, 1, 2])
    with pytest.raises(ValueError):
        MismatchedRadon(nominal, gains=[1.0, 2.0])
    with pytest.raises(ValueError):
        MismatchedRadon(torch.nn.Identity())


def test_config_round_trip(nominal):
    from ctrobust.operators.base import operator_from_config

    op = MismatchedRadon(nominal, angle_offset=0.01, gain_std=0.03, missing_views=2, seed=3)
    again = operator_from_config(op.to_config())
    x = _x()
    assert torch.allclose(again(x), op(x))


def test_sweep_and_worst_case(nominal):
    from ctrobust.data.phantoms import PhantomDataset
    from ctrobust.reconstruction.methods import FBPReconstruction
    from ctrobust.evaluation.mismatch_sweep import mismatch_sweep, summarize_mismatch, worst_case_grid
    from ctrobust.operators.noise import LogPoissonNoise

    images = torch.stack([PhantomDataset(2, 20, seed=1)[i] for i in range(2)])
    models = {"FBP": FBPReconstruction(nominal)}
    rows = mismatch_sweep(models, nominal, images, grid={"shift": (0.5, 1.0), "views": (2,)})
    summary = {(r["kind"], r["size"]): r for r in summarize_mismatch(rows)}
    assert set(summary) == {("none", 0.0), ("shift", 0.5), ("shift", 1.0), ("views", 2.0)}
    assert summary[("none", 0.0)]["y_perturbation_mean"] == 0.0
    assert 0 < summary[("shift", 0.5)]["y_perturbation_mean"] < summary[("shift", 1.0)]["y_perturbation_mean"]
    assert summary[("shift", 1.0)]["relative_error_mean"] > summary[("none", 0.0)]["relative_error_mean"]
    grid_rows, worst = worst_case_grid(models, nominal, images, angle_deg=0.5, shift=0.5, gain=0.02, views=2,
                                       noise=LogPoissonNoise(1e4, image_size=20))
    assert len(grid_rows) == 36 * 2
    per_sample, mean = worst
    assert per_sample["kind"] == "worst_per_sample" and mean["kind"] == "worst_mean"
    assert per_sample["relative_error_mean"] >= mean["relative_error_mean"] - 1e-12
    assert per_sample["relative_error_mean"] >= max(r["relative_error"] for r in grid_rows) / 2


def test_evaluate_mismatch_command(tmp_path):
    import json

    from ctrobust.app import EvaluateSpec, run_evaluate

    spec = EvaluateSpec(method=("fbp",), size=16, angles=10, n_samples=2, mismatch=True, mismatch_angles=(0.5,),
                        mismatch_shifts=(0.5,), mismatch_gains=(0.02,), mismatch_views=(1,), photons=1e4,
                        out=str(tmp_path / "mm"), progress=False)
    res = run_evaluate(spec)
    for name in ("mismatch.csv", "mismatch_summary.csv", "mismatch_worst.csv", "mismatch.png", "summary.json"):
        assert (tmp_path / "mm" / name).is_file()
    record = json.loads((tmp_path / "mm" / "summary.json").read_text())
    assert record["config"]["photons"] == 1e4 and "mismatch" in record["config"]
    assert {r["condition"] for r in res.summary} == {"clean", "dose"}
    assert "worst_per_sample" in res.text()
    with pytest.raises(Exception, match="only apply with --mismatch"):
        EvaluateSpec(method=("fbp",), mismatch_shifts=(1.0,))
