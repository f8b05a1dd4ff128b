"""Compressed-sensing operators: adjointness, spectra against dense references, fast DCT against scipy."""

import numpy as np
import pytest
import scipy.fft
import torch

import ctrobust
from ctrobust.operators.cs import DCTSubmatrix, GaussianCS, PartialDCT, dct_ortho, idct_ortho, cs_operator_from_config

# Small operators, odd sizes included; every contract test runs on each.
FACTORIES = {
    "gaussian": lambda: GaussianCS(13, (7, 5), seed=3),
    "gaussian-1d": lambda: GaussianCS(9, 20, seed=1),
    "partial-dct": lambda: PartialDCT(17, (7, 5), seed=2),
    "partial-dct-low": lambda: PartialDCT(20, (8, 8), seed=0, low_frequencies=6),
    "partial-dct-1d": lambda: PartialDCT(11, (30,), seed=4),
    "dct-submatrix": lambda: DCTSubmatrix(16, 35, seed=5, image_shape=(7, 5)),
}
OPS = pytest.mark.parametrize("name", sorted(FACTORIES))


def scipy_dct_matrix(size):
    """Orthonormal DCT-II matrix from scipy (independent of ctrobust's cosine formula and FFT path)."""
    return scipy.fft.dct(np.eye(size), norm="ortho", axis=0)


def dot_mismatch(op, dtype, device, seed):
    """``|<A x, y> - <x, A^T y>| / |<A x, y>|`` with ``y = A x + noise``.

    ``y`` correlated with ``A x`` keeps ``<A x, y>`` away from zero: for independent random ``y`` the
    denominator can cancel to ~1e-3 of ``||A x|| ||y||`` and the ratio then measures that cancellation,
    not the adjoint (it exceeded 1e-5 in float32 for one of three seeds).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, op.n, generator=gen, dtype=dtype).to(device)
    y = (op(x) + torch.randn(3, op.m, generator=gen, dtype=dtype).to(device)).detach()
    lhs = torch.sum(op(x).double() * y.double())
    rhs = torch.sum(x.double() * op.adjoint(y).double())
    return float((lhs - rhs).abs() / lhs.abs())


@OPS
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_dot_test(name, dtype, tol, device):
    op = FACTORIES[name]().to(device)
    for seed in range(3):
        assert dot_mismatch(op, dtype, device, seed) < tol
    if dtype == torch.float64:  # the base class's own test (independent random y)
        assert op.dot_test(dtype=dtype, device=device, batch=3) < tol


@OPS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_shape_and_dense_consistency(name, dtype, device):
    op = FACTORIES[name]().to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, op.n, generator=gen, dtype=dtype).to(device)
    y = op(x)
    assert y.shape == (4, op.m) and y.dtype == dtype and y.device == x.device
    dense = op.to_dense()
    assert dense.dtype == torch.float64 and dense.shape == (op.m, op.n)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(y.double(), x.double() @ dense.T, atol=tol, rtol=tol)
    assert torch.allclose(op.adjoint(y).double(), y.double() @ dense, atol=tol, rtol=tol)


@OPS
def test_backward_of_forward_is_adjoint(name, device):
    op = FACTORIES[name]().to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, op.n, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    w = torch.randn(3, op.m, generator=gen, dtype=torch.float64).to(device)
    (op(x) * w).sum().backward()
    assert torch.allclose(x.grad, op.adjoint(w), atol=1e-12)
    z = w.clone().requires_grad_(True)
    v = torch.randn(3, op.n, generator=gen, dtype=torch.float64).to(device)
    (op.adjoint(z) * v).sum().backward()
    assert torch.allclose(z.grad, op(v), atol=1e-12)


@OPS
def test_singular_values_match_dense_numpy_svd(name):
    op = FACTORIES[name]()
    s = op.singular_values()
    assert s.dtype == torch.float64 and s.shape == (min(op.m, op.n),)
    assert torch.all(s[:-1] >= s[1:])
    ref = np.linalg.svd(op.to_dense().numpy(), compute_uv=False)
    np.testing.assert_allclose(s.numpy(), ref, rtol=1e-10, atol=1e-12)
    assert op.cond() == pytest.approx(ref[0] / ref[-1], rel=1e-8)


@OPS
def test_pinv_matches_numpy_and_recovers_row_space(name):
    op = FACTORIES[name]()
    dense = op.to_dense().numpy()
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(3, op.m, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(op.pinv(y).numpy(), y.numpy() @ np.linalg.pinv(dense).T, atol=1e-9)
    x = op.adjoint(torch.randn(3, op.m, generator=gen, dtype=torch.float64))  # x in range(A^T)
    assert torch.allclose(op.pinv(op(x)), x, atol=1e-9 * op.cond())
    assert op.pinv(y.float()).dtype == torch.float32


@pytest.mark.parametrize("shape", [(7, 5), (8, 8), (1, 6), (9,)])
def test_partial_dct_equals_scipy_dctn_rows(shape):
    n = int(np.prod(shape))
    op = PartialDCT(max(1, n // 2), shape, seed=7)
    if len(shape) == 1:
        full = scipy_dct_matrix(shape[0])
    else:  # row-major flattening: the 2D DCT is the Kronecker product of the 1D ones
        full = np.kron(scipy_dct_matrix(shape[0]), scipy_dct_matrix(shape[1]))
    idx = op.indices.numpy()
    np.testing.assert_allclose(op.to_dense().numpy(), full[idx], atol=1e-13)
    x = np.random.default_rng(0).normal(size=(2, *shape))
    expected = scipy.fft.dctn(x, norm="ortho", axes=tuple(range(1, x.ndim))).reshape(2, n)[:, idx]
    np.testing.assert_allclose(op(torch.from_numpy(x.reshape(2, n))).numpy(), expected, atol=1e-12)


def test_partial_dct_rows_orthonormal_and_pinv_is_adjoint():
    op = PartialDCT(40, (9, 7), seed=1)
    dense = op.to_dense()
    assert torch.allclose(dense @ dense.T, torch.eye(40, dtype=torch.float64), atol=1e-12)
    assert op.cond() == 1.0
    y = torch.randn(2, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(op.pinv(y), op.adjoint(y))


def test_partial_dct_low_frequencies_and_selection():
    op = PartialDCT(10, (6, 6), seed=0, low_frequencies=3)
    freqs = {tuple(f) for f in op.frequencies().tolist()}
    assert {(0, 0), (0, 1), (1, 0)} <= freqs
    assert len(op.indices.unique()) == 10 and torch.all(op.indices[1:] > op.indices[:-1])
    full = PartialDCT(36, (6, 6), seed=3)
    assert full.indices.tolist() == list(range(36))


@pytest.mark.parametrize("n", [1, 2, 7, 8, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_dct_against_scipy(n, dtype):
    x = np.random.default_rng(n).normal(size=(3, n))
    t = torch.from_numpy(x).to(dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(dct_ortho(t).double().numpy(), scipy.fft.dct(x, norm="ortho"), atol=tol)
    np.testing.assert_allclose(idct_ortho(t).double().numpy(), scipy.fft.idct(x, norm="ortho"), atol=tol)
    np.testing.assert_allclose(
        dct_ortho(t.T.contiguous(), dim=0).T.double().numpy(), scipy.fft.dct(x, norm="ortho"), atol=tol
    )


def test_dct_submatrix_is_documented_submatrix_of_scipy_dct():
    op = DCTSubmatrix(12, 30, seed=4, ambient=64, band=40)
    rows = op.row_indices
    assert len(set(rows.tolist())) == 12 and np.all(np.diff(rows) > 0) and rows.max() < 40
    np.testing.assert_array_equal(op.column_indices, np.arange(30))
    np.testing.assert_allclose(op.to_dense().numpy(), scipy_dct_matrix(64)[np.ix_(rows, np.arange(30))], atol=1e-13)
    assert op.image_shape == (30,)


def test_dct_submatrix_default_is_ill_conditioned():
    # The documented default case (docstring): 28 x 28 images, 25 % sampling.
    op = DCTSubmatrix(196, 784, seed=0, image_shape=(28, 28))
    assert (op.ambient, op.band) == (1568, 490)
    cond = op.cond()
    assert 1e2 < cond < 1e8, cond  # ill-conditioned but finite (4.2e5 for seed 0)
    # Drawing the rows from the whole spectrum instead is well conditioned: the band is what hurts.
    assert DCTSubmatrix(196, 784, seed=0, band=1568).cond() < 20
    g = GaussianCS(196, (28, 28), seed=0)
    assert g.cond() < 3  # (1 + sqrt(1/4)) / (1 - sqrt(1/4)) = 3 for m/n = 1/4


@OPS
def test_seeds_reproducible_and_global_rng_untouched(name, global_rng_untouched):
    a, b = FACTORIES[name](), FACTORIES[name]()
    assert torch.equal(a.to_dense(), b.to_dense())
    cfg = a.to_config()
    assert torch.equal(cs_operator_from_config(cfg).to_dense(), a.to_dense())
    other = dict(cfg, seed=cfg["seed"] + 1)
    assert not torch.equal(cs_operator_from_config(other).to_dense(), a.to_dense())


@OPS
def test_shape_dtype_errors(name):
    op = FACTORIES[name]()
    with pytest.raises(ValueError, match=r"shape \(B, %d\)" % op.n):
        op(torch.zeros(2, op.n + 1))
    with pytest.raises(ValueError, match="shape"):
        op(torch.zeros(op.n))  # no batch axis: never broadcast
    with pytest.raises(ValueError, match=r"shape \(B, %d\)" % op.m):
        op.adjoint(torch.zeros(2, op.n))
    with pytest.raises(ValueError, match="pinv input"):
        op.pinv(torch.zeros(2, op.m + 1))
    with pytest.raises(TypeError, match="float32 or float64"):
        op(torch.zeros(2, op.n, dtype=torch.float16))


def test_constructor_errors():
    with pytest.raises(ValueError, match="m must be a positive integer"):
        GaussianCS(0, (4, 4))
    with pytest.raises(ValueError, match="image_shape entry must be a positive integer"):
        GaussianCS(3, (4, -4))
    with pytest.raises(ValueError, match="exceed n = 16"):
        PartialDCT(17, (4, 4))
    with pytest.raises(ValueError, match="low_frequencies"):
        PartialDCT(4, (4, 4), low_frequencies=5)
    with pytest.raises(ValueError, match="seed"):
        PartialDCT(4, (4, 4), seed=-1)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        DCTSubmatrix(4, 0)
    with pytest.raises(ValueError, match="ambient = 10 must be >= max"):
        DCTSubmatrix(4, 12, ambient=10)
    with pytest.raises(ValueError, match="band"):
        DCTSubmatrix(8, 12, band=4)
    with pytest.raises(ValueError, match="has 15 pixels but n = 16"):
        DCTSubmatrix(4, 16, image_shape=(3, 5))
    with pytest.raises(ctrobust.CtrobustError):  # the CLI shows these as user errors
        GaussianCS(2.5, 4)
    with pytest.raises(ValueError, match="not a CS operator"):
        cs_operator_from_config({"type": "Nope"})


def test_module_moves_keep_float64_master_and_state_dict_is_small():
    op = GaussianCS(6, (3, 3), seed=0)
    dense = op.to_dense()
    op.float()
    assert op.matrix.dtype == torch.float64 and torch.equal(op.to_dense(), dense)
    op.to("cpu", torch.float32)
    assert op.dot_test(dtype=torch.float64) < 1e-12
    assert op.state_dict() == {}  # rebuilt from the seed, not stored in checkpoints
    wrapper = torch.nn.Sequential(op)
    wrapper.to(torch.float64)
    assert op(torch.ones(1, 9, dtype=torch.float32)).dtype == torch.float32


def test_adjoint_and_composition_operators():
    op = DCTSubmatrix(6, 10, seed=1)
    assert op.T.dot_test() < 1e-12
    assert torch.allclose(op.T(torch.eye(6, dtype=torch.float64)), op.to_dense())
    g = GaussianCS(10, 8, seed=0)
    comp = op @ g
    assert comp.dot_test() < 1e-12
    x = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(comp(x), op(g(x)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_device_checks():
    op = PartialDCT(10, (4, 4)).cuda()
    assert op.indices.is_cuda
    with pytest.raises(ValueError, match="is on cpu but the operator is on cuda"):
        op(torch.zeros(1, 16))
    g = GaussianCS(5, 16).cuda()
    assert g.matrix.dtype == torch.float64
    x = torch.randn(2, 16, device="cuda")
    assert torch.allclose(g(x).double().cpu(), x.double().cpu() @ g.to_dense().cpu().T, atol=1e-5)
    assert g.pinv(g(x)).is_cuda
