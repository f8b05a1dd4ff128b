"""A reconstruction autograd cannot differentiate is refused up front, with what is wrong and what to do,
instead of torch's bare "element 0 of tensors does not require grad" deep in the attack or training."""

import pytest
import torch
from torch import nn

from ctrobust.attacks import NotDifferentiableError, check_differentiable
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.operators.radon import RadonTransform

N, A = 16, 8


@pytest.fixture(scope="module")
def op():
    return RadonTransform(ParallelBeam2D(N, A))


class NoGradNet(nn.Module):
    """A trainable model whose forward runs under torch.no_grad() (e.g. an iterative solver left un-unrolled)."""

    def __init__(self, op):
        super().__init__()
        self.op, self.scale = op, nn.Parameter(torch.ones(()))

    def forward(self, y):
        with torch.no_grad():
            return self.scale * self.op.fbp(y)


class DetachesInput(NoGradNet):
    """Parameters get gradients, the measurement does not (it is detached): plain training works, attacks cannot."""

    def forward(self, y):
        return self.scale * self.op.fbp(y.detach())


def y_of(op):
    return op(torch.rand(1, 1, N, N, generator=torch.Generator().manual_seed(0)))


def test_probe_tells_what_is_wrong(op):
    y = y_of(op)
    check_differentiable(op.fbp, y)  # FBP is differentiable
    with pytest.raises(NotDifferentiableError, match=r"carries no gradient .*torch.no_grad\(\).*unrolled"):
        check_differentiable(NoGradNet(op), y, label="net")
    with pytest.raises(NotDifferentiableError, match="carries no gradient"):  # a round trip through NumPy
        check_differentiable(lambda v: torch.from_numpy(op.fbp(v).detach().numpy()), y)
    with pytest.raises(NotDifferentiableError, match="with respect to its measurement y"):
        check_differentiable(DetachesInput(op), y)
    model = DetachesInput(op)
    check_differentiable(model, y, wrt_input=False, parameters=model.parameters())  # enough for plain training
    assert y.grad is None and not y.requires_grad  # the caller's tensor is untouched


def test_attack_refuses_a_non_differentiable_method(tmp_path, capsys):
    from ctrobust.cli import main
    from ctrobust.reconstruction import methods

    methods.register_method("nograd_fbp", lambda operator: NoGradNet(operator))
    try:
        out = tmp_path / "res"
        assert main(["attack", "--method", "nograd_fbp", "--size", str(N), "--angles", str(A), "--n-samples", "1",
                     "--steps", "1", "--out", str(out)]) == 1
    finally:
        methods.METHODS.pop("nograd_fbp", None)
        methods.METHOD_SIGNATURES.pop("nograd_fbp", None)
    err = capsys.readouterr().err
    assert "nograd_fbp" in err and "is not differentiable" in err and "does not require grad" not in err
    assert not out.exists()  # refused before the result folder is made


@pytest.mark.parametrize("objective, model_class", [("plain", NoGradNet), ("minmax", DetachesInput)])
def test_fit_refuses_before_the_first_step(op, tmp_path, objective, model_class):
    from ctrobust.training.trainer import fit

    data = [torch.rand(1, N, N, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with pytest.raises(NotDifferentiableError, match=f"{objective} training"):
        fit(model_class(op), op, objective, data, max_steps=1, batch_size=2, out=None, progress=False)
