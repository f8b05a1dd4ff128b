"""One contract, every operator: adjointness, autograd, batching, dtypes, devices, input errors.

Operators come from the dict ``FACTORIES`` (name -> ``Case``); per-operator tolerances are written
there. Factories import lazily, so a missing optional backend skips only its own cases.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from ctrobust import ParallelBeam2D
from ctrobust.operators import cs as cs_module


@dataclass(frozen=True)
class Case:
    make: Callable[[], object]
    dot32: float = 1e-5  # dot-test tolerance, float32 inputs
    dot64: float = 1e-10  # dot-test tolerance, float64 inputs
    exact64: bool = True  # computes in float64 for float64 inputs (gradcheck applies)
    cuda: bool = True  # serves CUDA tensors


def radon(*geometry, backend="astra", g=None, **kw):
    def make():
        from ctrobust import RadonTransform

        if backend == "odl":
            pytest.importorskip("odl")
        return RadonTransform(ParallelBeam2D(*geometry, **(g or {})), backend=backend, **kw)

    return make


def fan(*geometry, backend="astra", g=None, **kw):
    def make():
        from ctrobust import FanBeam2D, RadonTransform

        if backend == "odl":
            pytest.importorskip("odl")
        return RadonTransform(FanBeam2D(*geometry, **(g or {})), backend=backend, **kw)

    return make


def fan_backprojection(*geometry, **kw):
    def make():
        from ctrobust import FanBeam2D
        from ctrobust.operators.fanbeam import FanBackprojection

        return FanBackprojection(FanBeam2D(*geometry), **kw)

    return make


def cs(name, *args, **kwargs):
    return lambda: getattr(cs_module, name)(*args, **kwargs)


def adjoint_of(make):
    return lambda: make().T


def composed(outer, inner):
    return lambda: outer() @ inner()


FACTORIES = {
    "radon-astra-odd": Case(radon(11, 7)),
    "radon-astra-even-2pi": Case(radon(12, 8, g={"n_detectors": 15, "angle_range": 2 * math.pi})),
    "radon-astra-strip": Case(radon(10, 6, projector="strip")),
    # ODL's astra_cpu computes in float32 even for float64 input: float64 dot tests 1e-7 to 9e-7 measured
    "radon-odl": Case(radon(11, 7, backend="odl"), dot64=1e-5, exact64=False, cuda=False),
    "radon-astra.T": Case(adjoint_of(radon(9, 5))),
    "radon-normal": Case(composed(adjoint_of(radon(9, 5)), radon(9, 5))),
    # fan beam (ASTRA fanflat): odd sizes, a short scan with the strip kernel, the ODL route, FBP's backprojection
    "fan-astra-odd": Case(fan(11, 7)),
    "fan-astra-strip-short": Case(fan(12, 9, g={"n_detectors": 19, "angle_range": 4.0, "source_origin": 30.0,
                                              "origin_detector": 20.0, "detector_spacing": 1.25},
                                      projector="strip_fanflat")),
    "fan-odl": Case(fan(11, 7, backend="odl"), dot64=1e-5, exact64=False, cuda=False),
    "fan-backprojection": Case(fan_backprojection(9, 5)),
    "cs-gaussian": Case(cs("GaussianCS", 30, (6, 7), seed=0)),
    "cs-partial-dct": Case(cs("PartialDCT", 20, (6, 5), seed=1)),
    "cs-dct-submatrix": Case(cs("DCTSubmatrix", 15, 24, seed=2)),
    "cs-matrix": Case(cs("MatrixOperator", [[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 3.0, 1.0], [0.0, 1.0, 1.0, 1.0]],
                         image_shape=(2, 2))),
}


@pytest.fixture(scope="module", autouse=True)
def _module_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CTROBUST_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ctrobust-cache"))
        yield


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def case(request):
    c = FACTORIES[request.param]
    return c, c.make()


@pytest.fixture
def op_on(case, device):
    c, op = case
    if device.type == "cuda" and not c.cuda:
        pytest.skip("this backend serves CPU tensors only")
    return c, op.to(device)


def rand(shape, dtype=torch.float64, device="cpu", seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


def dense(op, device, transpose=False):
    """The matrix of ``op`` (or of its adjoint) by applying it to the identity, float64 (rows = outputs)."""
    shape_in = op.range_shape if transpose else op.domain_shape
    n = math.prod(shape_in)
    eye = torch.eye(n, dtype=torch.float64, device=device).reshape(n, *shape_in)
    out = op.adjoint(eye) if transpose else op(eye)
    return out.reshape(n, -1).T


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dot_test(op_on, device, dtype, global_rng_untouched):
    c, op = op_on
    err = op.dot_test(batch=3, dtype=dtype, device=device)
    assert err < (c.dot32 if dtype == torch.float32 else c.dot64)


def test_dense_adjoint_is_transpose(op_on, device):
    c, op = op_on
    a = dense(op, device)
    at = dense(op, device, transpose=True)
    assert a.shape == (math.prod(op.range_shape), math.prod(op.domain_shape))
    tol = 1e-12 if c.exact64 else 1e-6
    torch.testing.assert_close(at, a.T, rtol=tol, atol=tol * float(a.abs().max()))
    assert op.norm(iterations=300, device=device) == pytest.approx(float(torch.linalg.matrix_norm(a, 2)), rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtype_preserved(op_on, device, dtype):
    _, op = op_on
    y = op(rand((2, *op.domain_shape), dtype, device))
    assert y.shape == (2, *op.range_shape) and y.dtype == dtype and y.device.type == device.type
    x = op.adjoint(rand((2, *op.range_shape), dtype, device))
    assert x.shape == (2, *op.domain_shape) and x.dtype == dtype and x.device.type == device.type


def test_backward_of_forward_is_adjoint(op_on, device):
    _, op = op_on
    x = rand((2, *op.domain_shape), device=device, seed=1).requires_grad_()
    y = rand((2, *op.range_shape), device=device, seed=2).requires_grad_()
    (gx,) = torch.autograd.grad((op(x) * y).sum(), x)
    torch.testing.assert_close(gx, op.adjoint(y.detach()), rtol=1e-12, atol=1e-12)
    (gy,) = torch.autograd.grad((op.adjoint(y) * x).sum(), y)
    torch.testing.assert_close(gy, op(x.detach()), rtol=1e-12, atol=1e-12)


def test_gradcheck_or_exact_linearity(op_on, device):
    c, op = op_on
    x = rand((1, *op.domain_shape), device=device, seed=3).requires_grad_()
    y = rand((1, *op.range_shape), device=device, seed=4).requires_grad_()
    if c.exact64:
        assert torch.autograd.gradcheck(op, (x,))
        assert torch.autograd.gradcheck(op.adjoint, (y,))
    else:  # float32 inside: check linearity to float32 precision (backward == adjoint is tested above)
        x2 = rand((1, *op.domain_shape), device=device, seed=5)
        lhs = op(2.0 * x.detach() - 3.0 * x2)
        rhs = 2.0 * op(x.detach()) - 3.0 * op(x2)
        assert float((lhs - rhs).norm() / rhs.norm()) < 1e-6


def test_batch_equals_singles(op_on, device):
    _, op = op_on
    x = rand((3, *op.domain_shape), device=device, seed=6)
    y = rand((3, *op.range_shape), device=device, seed=7)
    torch.testing.assert_close(op(x), torch.cat([op(x[i : i + 1]) for i in range(3)]))
    torch.testing.assert_close(op.adjoint(y), torch.cat([op.adjoint(y[i : i + 1]) for i in range(3)]))


def test_non_contiguous_input(op_on, device):
    _, op = op_on
    x = rand((3, *op.domain_shape, 2), device=device, seed=8)[..., 1]
    y = rand((3, *op.range_shape, 2), device=device, seed=9)[..., 0]
    assert not x.is_contiguous() and not y.is_contiguous()
    torch.testing.assert_close(op(x), op(x.contiguous()), rtol=0, atol=0)
    torch.testing.assert_close(op.adjoint(y), op.adjoint(y.contiguous()), rtol=0, atol=0)


def test_wrong_inputs_raise(case):
    _, op = case
    dom, ran = op.domain_shape, op.range_shape
    shown = ", ".join(str(s) for s in dom)
    with pytest.raises(ValueError, match=rf"input must have shape \(B, {shown}\), got {re.escape(str(tuple(dom)))}"):
        op(torch.zeros(dom))  # missing batch dimension: never broadcast
    with pytest.raises(ValueError, match="input must have shape"):
        op(torch.zeros(2, *dom[:-1], dom[-1] + 1))
    with pytest.raises(ValueError, match="adjoint input must have shape"):
        op.adjoint(torch.zeros(2, *dom) if tuple(dom) != tuple(ran) else torch.zeros(2, *ran, 1))
    with pytest.raises(ValueError, match="input must have shape"):
        op(torch.zeros(0, *dom))
    with pytest.raises(TypeError, match="must be float32 or float64, got torch.int64"):
        op(torch.zeros(2, *dom, dtype=torch.int64))
    with pytest.raises(TypeError, match="must be float32 or float64, got torch.float16"):
        op.adjoint(torch.zeros(2, *ran, dtype=torch.float16))
    with pytest.raises(TypeError, match="must be a torch.Tensor, got ndarray"):
        op(torch.zeros(2, *dom).numpy())
    with pytest.raises(ValueError, match="meta"):
        op(torch.zeros(2, *dom, device="meta"))


def test_module_moves_and_copies(case):
    """``.to()`` / ``.double()`` on the operator (or a model holding it) work; copies compute the same."""
    _, op = case
    x = rand((2, *op.domain_shape), seed=10)
    expected = op(x)
    holder = torch.nn.Sequential(torch.nn.Identity())
    holder.operator = op
    holder.to("cpu").double().float()
    torch.testing.assert_close(copy.deepcopy(op)(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(op(x), expected, rtol=0, atol=0)


def test_vocabulary_and_config_round_trip(case):
    """Every operator: ``image_shape`` holds its domain, ``to_config`` rebuilds it exactly, ``pinv`` maps back."""
    from ctrobust.operators.base import operator_from_config

    _, op = case
    assert math.prod(op.image_shape) == math.prod(op.domain_shape)
    cfg = op.to_config()
    assert cfg["type"] in str(type(op).__name__) or cfg["type"] in ("AdjointOperator", "ComposedOperator")
    again = operator_from_config(cfg)
    assert type(again) is type(op) and again.to_config() == cfg
    x = rand((2, *op.domain_shape), torch.float64, seed=4)
    torch.testing.assert_close(again(x), op(x), rtol=0, atol=0)
    y = rand((2, *op.range_shape), torch.float64, seed=5)
    torch.testing.assert_close(again.adjoint(y), op.adjoint(y), rtol=0, atol=0)
    torch.testing.assert_close(op.T(y), op.adjoint(y), rtol=0, atol=0)
    if op.has_pinv:
        assert op.pinv(op(x)).shape == x.shape
    else:
        with pytest.raises(NotImplementedError):
            op.pinv(y)


def test_radon_image_shape_and_pinv_is_fbp():
    from ctrobust import RadonTransform

    op = RadonTransform(ParallelBeam2D(12, 8))
    assert op.image_shape == (12, 12) and op.has_pinv
    y = rand((2, *op.range_shape), torch.float64, seed=1)
    assert torch.equal(op.pinv(y), op.fbp(y, filter="ram-lak"))
    assert torch.equal(op.pinv(y, filter="hann"), op.fbp(y, filter="hann"))


def test_contract_catches_the_adjoint_of_another_geometry():
    """Planted bug: the adjoint replaced by the transpose of a different geometry's forward (same shapes:
    the views spread over 2 pi instead of pi). The dot test and the dense-transpose check both refuse it."""
    from ctrobust import RadonTransform
    from ctrobust.operators.base import LinearOperator

    op = RadonTransform(ParallelBeam2D(11, 7))
    other = RadonTransform(ParallelBeam2D(11, 7, angle_range=2 * math.pi))
    assert other.range_shape == op.range_shape and other.domain_shape == op.domain_shape

    class WrongAdjoint(LinearOperator):
        def __init__(self):
            super().__init__(op.domain_shape, op.range_shape)

        def _matvec(self, x):
            return op._matvec(x)

        def _rmatvec(self, y):
            return other._rmatvec(y)

    bad = WrongAdjoint()
    assert op.dot_test() < 1e-10
    assert bad.dot_test() > 1e-2
    a = dense(bad, torch.device("cpu"))
    at = dense(bad, torch.device("cpu"), transpose=True)
    assert float((at - a.T).abs().max()) > 1e-2 * float(a.abs().max())
