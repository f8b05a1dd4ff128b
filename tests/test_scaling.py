"""Costs that grow with the image size: ASTRA's matrix built in blocks (the same CSR, a bounded peak), float32
matrices only, the linearisation's cheap path for linear reconstructions and its progress, and the
scaling benchmark (benchmarks/scaling.py)."""

import importlib.util
import math
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ctrobust.attacks.worst_case import (LINEAR_BUDGET, NETWORK_BUDGET, default_budget, is_linear,
                                         linearized_worst_case)
from ctrobust.evaluation.robustness import robustness_curve
from ctrobust.operators import astra_backend as ab
from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D
from ctrobust.operators.radon import RadonTransform
from ctrobust.reconstruction.methods import FBPReconstruction

ROOT = Path(__file__).resolve().parents[1]


def _one_piece(geometry, projector):
    """ASTRA's matrix of the whole geometry in one call (the reference, independent of the blocked code)."""
    import astra

    vol_geom, proj_geom = ab.astra_geometries(geometry)
    pid = astra.create_projector(projector, proj_geom, vol_geom)
    mid = astra.projector.matrix(pid)
    try:
        mat = sp.csr_matrix(astra.matrix.get(mid))
    finally:
        astra.matrix.delete(mid)
        astra.projector.delete(pid)
    mat.sum_duplicates()
    return mat


@pytest.mark.parametrize("geometry, projector", [
    (ParallelBeam2D(37, 31), "linear"),
    (ParallelBeam2D(24, 17), "strip"),
    (FanBeam2D(33, 40), "line_fanflat"),
])
@pytest.mark.parametrize("block_views", [1, 7, 1000])
def test_matrix_built_in_blocks_is_astras_matrix(geometry, projector, block_views):
    ref = _one_piece(geometry, projector)
    got = ab.build_system_matrix(geometry, projector, block_views=block_views)
    assert got.shape == ref.shape == (geometry.n_angles * geometry.n_detectors, geometry.image_size ** 2)
    assert got.data.dtype == np.float32 and got.indices.dtype == np.int32 and got.indptr.dtype == np.int32
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.data, ref.data.astype(np.float32))
    assert got.has_canonical_format


def test_astras_float64_copy_is_one_block_at_a_time(monkeypatch):
    import astra

    geometry = ParallelBeam2D(16, 20)
    rows = []
    original = astra.matrix.get

    def spy(mid):
        mat = original(mid)
        rows.append(mat.shape[0])
        return mat

    monkeypatch.setattr(astra.matrix, "get", spy)
    ab.build_system_matrix(geometry, block_views=6)
    assert rows == [6 * geometry.n_detectors] * 3 + [2 * geometry.n_detectors]
    with pytest.raises(ValueError, match="block_views"):
        ab.build_system_matrix(geometry, block_views=0)


def test_peak_memory_of_the_build_is_bounded():
    ab.build_system_matrix(ParallelBeam2D(8, 5))  # lazy imports and first-call allocations out of the way
    geometry = ParallelBeam2D(48, 64)

    def peak_ratio(block_views):
        tracemalloc.start()
        try:
            mat = ab.build_system_matrix(geometry, block_views=block_views)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak / (mat.data.nbytes + mat.indices.nbytes + mat.indptr.nbytes)

    # in one piece ASTRA's float64 copy and the float32 casts coexist (measured 2.5x the result);
    # in blocks of 16 views the finished blocks plus one assembled array (measured 1.52x)
    assert peak_ratio(ab.BLOCK_VIEWS) < 1.7
    assert peak_ratio(1000) > 2.0  # the measurement can tell the two apart


def test_matrices_in_memory_are_float32_with_int32_indices():
    geometry = ParallelBeam2D(20, 12)
    ab.clear_memory_cache(geometry)
    op = RadonTransform(geometry)
    x = torch.rand(2, 1, 20, 20)
    op(x)
    op.adjoint(op(x))
    kept = [(k, m) for k, pair in ab._DEVICE.items() if k[0] == geometry.key() for m in pair]
    assert kept and all(k[3] == torch.float32 for k, _ in kept)  # no float64 copy made for float32 work
    for _, m in kept:
        assert m.values().dtype == torch.float32
        assert m.crow_indices().dtype == torch.int32 and m.col_indices().dtype == torch.int32
    a, at = ab.torch_matrices(geometry)
    torch.testing.assert_close(at.to_dense(), a.to_dense().T, rtol=0, atol=0)  # A^T is the exact transpose


# --- the linearisation ----------------------------------------------------------------------------------
class CountingFBP(FBPReconstruction):
    calls = 0

    def forward(self, y):
        CountingFBP.calls += 1
        return super().forward(y)


def test_linear_reconstructions_use_one_forward_pass_per_lanczos_iteration():
    op = RadonTransform(ParallelBeam2D(16, 12))
    f = CountingFBP(op)
    assert is_linear(f) and default_budget(f) == LINEAR_BUDGET
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64)
    y = op(x)
    radii = torch.stack([0.01 * y.flatten(1).norm(dim=1), 0.04 * y.flatten(1).norm(dim=1)])
    CountingFBP.calls = 0
    seen = []
    fast = linearized_worst_case(f, y, x, radii, max_iterations=40, tol=1e-10,
                                 callback=lambda it, change: seen.append((it, change)))
    assert CountingFBP.calls == 1 + fast.iterations  # the graph's forward, then J v = f(v) per iteration
    assert [it for it, _ in seen] == list(range(1, fast.iterations + 1))
    assert all(math.isnan(c) for it, c in seen if it < 10) and not math.isnan(seen[-1][1])
    slow = linearized_worst_case(f, y, x, radii, max_iterations=40, tol=1e-10, linear=False)  # double backward
    torch.testing.assert_close(fast.predicted, slow.predicted, rtol=1e-9, atol=0)
    torch.testing.assert_close(fast.jacobian_norm, slow.jacobian_norm, rtol=1e-9, atol=0)
    # the maximiser lies on the sphere of each radius
    norms = fast.delta.flatten(2).norm(dim=2)
    torch.testing.assert_close(norms, radii, rtol=1e-9, atol=0)


def test_networks_get_the_smaller_budget():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    assert default_budget(net) == NETWORK_BUDGET and NETWORK_BUDGET[0] < LINEAR_BUDGET[0]


def test_robustness_curve_records_the_linearisation_cost():
    from ctrobust.attacks import AttackSettings

    op = RadonTransform(ParallelBeam2D(16, 12))
    data = [t for t in torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))]
    res = robustness_curve(FBPReconstruction(op), data, op, [0.0, 0.01], AttackSettings(steps=2), batch_size=2, progress=False,
                           linearization=True)
    runs = res.config["linearization_runs"]
    assert [r["batch"] for r in runs] == [0, 1]
    assert all(1 <= r["iterations"] <= LINEAR_BUDGET[0] and r["seconds"] >= 0 for r in runs)
    assert res.config["linearization_budget"] == {"max_iterations": LINEAR_BUDGET[0], "tol": LINEAR_BUDGET[1]}
    plain = robustness_curve(FBPReconstruction(op), data, op, [0.0, 0.01], AttackSettings(steps=2), progress=False,
                             linearization=False)
    assert "linearization_runs" not in plain.config


# --- benchmarks/scaling.py ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "benchmarks" / "scaling.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_scaling"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_fitted_exponents_are_the_log_log_slopes(scaling):
    sizes = [32, 64, 128, 512]
    assert scaling.fit_exponent(sizes, [3.0 * n ** 2 for n in sizes]) == pytest.approx(2.0, abs=1e-12)
    assert scaling.fit_exponent(sizes, [0.5 * n ** 1.5 for n in sizes]) == pytest.approx(1.5, abs=1e-12)
    assert scaling.fit_exponent([64, 128], [1.0, 8.0]) == pytest.approx(3.0)
    assert scaling.fit_exponent([64], [1.0]) is None
    rows = [{"size": 64, "build_s": 1.0, "operator_ms": 2.0}, {"size": 128, "build_s": 4.0}]
    fits = scaling.exponents(rows)
    assert fits == {"build_s": pytest.approx(2.0)}  # one point of operator_ms: no fit
    table = scaling.markdown_table(rows, fits).splitlines()
    assert table[0].startswith("| N | build s |") and "fwd+bwd" in table[0]
    assert table[-1].split("|")[2].strip() == "2.00" and table[-1].split("|")[3].strip() == "-"


def test_quick_scaling_run_measures_every_phase(scaling, tmp_path, capsys):
    out = tmp_path / "table.md"
    js = tmp_path / "rows.json"
    assert scaling.main(["--quick", "--in-process", "--sizes", "16", "24", "--output", str(out), "--json", str(js)]) == 0
    import json

    got = json.loads(js.read_text())
    rows = got["rows"]
    assert [r["size"] for r in rows] == [16, 24] and not any("errors" in r for r in rows)
    for r in rows:
        for key in ("build_s", "nnz_millions", "matrix_mib", "operator_ms", "train_fbpconvnet_s", "attack_s",
                    "lanczos_s", "train_fbpconvnet_peak_mib"):
            assert r[key] > 0, key
        assert ("train_lpd_s" in r) == ("train_lpd_checkpointed_s" in r) == (scaling.lpd_class() is not None)
    # the number of non-zeros grows like N^2 (N^2 pixels x a bounded number of rays each) or a little more
    assert 1.8 < got["exponents"]["nnz_millions"] < 2.4
    assert out.read_text() == capsys.readouterr().out


def test_phases_measures_only_the_phases_named(scaling, tmp_path, capsys):
    js = tmp_path / "rows.json"
    assert scaling.main(["--quick", "--in-process", "--sizes", "16", "--phases", "operator", "train_lpd_checkpointed",
                         "--json", str(js)]) == 0
    import json

    (row,) = json.loads(js.read_text())["rows"]
    assert set(row) == {"size", "operator_ms", "train_lpd_checkpointed_s", "train_lpd_checkpointed_peak_mib"}
    assert "LPD ckpt" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        scaling.parse_args(["--phases", "nonsense"])


def test_a_phase_that_dies_is_reported_with_its_cause(scaling):
    assert scaling.child_error(1, "x\nMemoryError: ...\n", 16) == "over the 16 GiB limit"
    assert "out-of-memory killer" in scaling.child_error(-9, "", 16)  # SIGKILL, as the kernel's OOM killer sends
    assert scaling.child_error(-15, "", 16) == "killed by SIGTERM"
    assert scaling.child_error(2, "Traceback\nValueError: bad size\n", 16) == "ValueError: bad size"
    assert scaling.child_error(3, "", 16) == "exit status 3 without output"
