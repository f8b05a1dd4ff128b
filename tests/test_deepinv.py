"""deepinv interop (ctrobust.models.deepinv, docs/interop.md): a ctrobust operator as LinearPhysics (A, exact
A_adjoint, A_dagger = FBP / A^+), a deepinv reconstructor as f(y) that trains, is attacked and registers as a
method; against a duck-typed stand-in always, against real deepinv when it imports."""

import re
import sys
from pathlib import Path

import pytest

from ctrobust.attacks import AttackSettings
import torch
from torch import nn

from ctrobust.attacks import pga_attack
from ctrobust.data import load_split
from ctrobust.models.deepinv import DeepinvReconstructor, as_physics, deepinv_linear_physics
from ctrobust.operators.cs import GaussianCS
from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D
from ctrobust.operators.radon import RadonTransform
from ctrobust.training import fit

from deepinv_standin import LinearPhysics as StandIn, fake_deepinv_package, real_deepinv_or_skip

OPERATORS = {
    "parallel": lambda: RadonTransform(ParallelBeam2D(16, 7)),
    "fan": lambda: RadonTransform(FanBeam2D(16, 8)),
    "cs": lambda: GaussianCS(12, (5, 4), seed=1),
}


@pytest.fixture(params=["stand-in", "deepinv"])
def base(request):
    return StandIn if request.param == "stand-in" else real_deepinv_or_skip()


@pytest.fixture(scope="module", params=list(OPERATORS))
def op(request):
    return OPERATORS[request.param]()


def _image(op, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 1, *op.image_shape), generator=gen, dtype=torch.float64)


def _domain(op, x):
    return x.reshape(x.shape[0], *op.domain_shape)


def test_physics_is_the_operator_its_adjoint_and_its_inverse(op, base):
    physics = as_physics(op, base=base)
    assert isinstance(physics, base) and physics.operator is op
    x = _image(op)
    y = physics.A(x)
    torch.testing.assert_close(y, op(_domain(op, x)), rtol=0, atol=0)
    torch.testing.assert_close(physics(x), y)  # noise-free by default
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    back = physics.A_adjoint(r)
    assert back.shape == x.shape  # images, also for CS
    torch.testing.assert_close((y * r).sum(), (x * back).sum(), rtol=1e-9, atol=1e-12)  # exact adjoint
    dagger = physics.A_dagger(y)
    torch.testing.assert_close(_domain(op, dagger), op.pinv(y), rtol=0, atol=0)  # FBP / A^+, not an iterative solve
    if isinstance(op, RadonTransform):
        torch.testing.assert_close(dagger, op.fbp(y))
    if base is StandIn:
        assert physics.dagger_calls == 0


def test_physics_options_pass_through_and_gradients_flow(base):
    op = OPERATORS["parallel"]()
    physics = as_physics(op, base=base, noise_model=lambda y, **kw: y + 1.0)
    x = _image(op).requires_grad_(True)
    assert torch.allclose(physics(x), physics.A(x) + 1.0)
    (g,) = torch.autograd.grad(physics.A(x).pow(2).sum(), x)
    torch.testing.assert_close(g, 2 * op.adjoint(op(x)))


def test_without_deepinv_as_physics_says_why():
    if deepinv_linear_physics()[0] is not None:
        pytest.skip("deepinv imports here")
    with pytest.raises(ImportError, match="needs deepinv .* does not import here"):
        as_physics(OPERATORS["parallel"]())
    with pytest.raises(TypeError, match="LinearOperator"):
        as_physics(torch.nn.Identity(), base=StandIn)


class ArtifactRemoval(nn.Module):
    """deepinv's convention: model(y, physics); x = A_dagger(y) + CNN(A_dagger(y))."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))

    def forward(self, y, physics):
        x0 = physics.A_dagger(y)
        return x0 + self.cnn(x0)


def test_reconstructor_is_f_of_y_and_trains_and_is_attacked(op, base):
    model = ArtifactRemoval()
    f = DeepinvReconstructor(model, op, base=base)  # an operator is wrapped by as_physics
    assert f.operator is op and isinstance(f.physics, base)
    x = _domain(op, _image(op).float())
    y = op(x)
    out = f(y)
    assert out.shape == x.shape
    with torch.no_grad():
        x0 = op.pinv(y).reshape(2, 1, *op.image_shape)
        torch.testing.assert_close(out, _domain(op, x0 + model.cnn(x0)))
    data = torch.utils.data.TensorDataset(torch.rand((4, *op.domain_shape), generator=torch.Generator().manual_seed(0)))
    before = [p.detach().clone() for p in f.parameters()]
    fit(f, op, "minmax", data, max_steps=2, batch_size=2, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, f.parameters()))
    result = pga_attack(f.eval(), y, x, eps=0.05, settings=AttackSettings(steps=3), generator=torch.Generator().manual_seed(0))
    assert torch.all(result.delta.flatten(1).norm(dim=1) <= result.radius * (1 + 1e-5))
    assert float(result.error.max()) > 0


def test_reconstructor_refuses_what_is_not_physics():
    with pytest.raises(TypeError, match="A and A_adjoint"):
        DeepinvReconstructor(ArtifactRemoval(), object())
    f = DeepinvReconstructor(lambda y, physics: torch.zeros(y.shape[0], 3), as_physics(OPERATORS["parallel"](),
                                                                                      base=StandIn))
    with pytest.raises(ValueError, match="domain"):
        f(torch.zeros(1, 1, 7, 23))


def _recipe() -> str:
    text = (Path(__file__).parents[1] / "docs" / "interop.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.parametrize("which", ["stand-in", "deepinv"])
def test_the_docs_recipe_runs(which, monkeypatch, tmp_path, capsys):
    if which == "stand-in":
        for name, module in fake_deepinv_package().items():
            monkeypatch.setitem(sys.modules, name, module)
    else:
        real_deepinv_or_skip()
    from ctrobust.reconstruction import methods

    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))
    namespace = {"__name__": "recipe"}
    exec(compile(_recipe(), "docs/interop.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert 0 < float(printed) < 2
    # the registered method reaches ctrobust attack's loader
    from ctrobust.app import AttackSpec, run_attack

    result = run_attack(AttackSpec(method=("deepinv-artifact-removal",), size=32, angles=30, eps_grid=(0.0, 0.02),
                                   steps=2, n_samples=2, batch_size=2, out=str(tmp_path / "a"), progress=False,
                                   fbp=False))
    assert {r["model"] for r in result.summary} == {"deepinv-artifact-removal"}
