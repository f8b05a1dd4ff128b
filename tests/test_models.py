"""Models: U-Net shapes at odd sizes, FBPConvNet = FBP + U-Net, CS nets, linear map, adversary, rebuild."""

import math

import pytest
import torch

from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.models import (Adversary, CSResidualNet, FBPConvNet, LinearReconstruction, ResidualReconstruction, UNet,
                             build_model, eps_radius, project_l2_ball)
from ctrobust.operators.cs import GaussianCS
from ctrobust.operators.radon import RadonTransform


@pytest.fixture(scope="module")
def radon():
    return RadonTransform(ParallelBeam2D(32, 12))


def randomize_head(net, seed=0):
    """Give the U-Net's zero-initialised last layer random weights, so ``U(x0)`` is not 0 and a forward
    that dropped the U-Net term cannot pass a residual check."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (net.unet.head.weight, net.unet.head.bias):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net


@pytest.mark.parametrize("shape", [(37, 37), (50, 50), (33, 20), (64, 64)])
def test_unet_any_size(shape, global_rng_untouched):
    net = UNet(1, 2, channels=4, depth=2, seed=0)
    x = torch.randn(2, 1, *shape, generator=torch.Generator().manual_seed(1))
    out = net(x)
    assert out.shape == (2, 2, *shape)
    # the crop keeps the image where it was: a constant image padded by replication stays local
    assert torch.isfinite(out).all()


def test_unet_published_widths():
    net = UNet(seed=0)  # Jin et al.: 4 poolings, 64 .. 1024 channels
    assert [b[0].out_channels for b in net.down] == [64, 128, 256, 512, 1024]
    assert net.depth == 4 and isinstance(net.down[0][1], torch.nn.BatchNorm2d)


def test_unet_seed_is_deterministic_and_leaves_global_rng(global_rng_untouched):
    a, b = UNet(1, 1, 4, 2, seed=3), UNet(1, 1, 4, 2, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = UNet(1, 1, 4, 2, seed=4)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_unet_1d():
    net = UNet(1, 1, 4, 2, dims=1, seed=0)
    assert net(torch.randn(3, 1, 37)).shape == (3, 1, 37)


def test_unet_rejects_bad_options():
    with pytest.raises(ValueError, match="norm"):
        UNet(norm="layer")
    with pytest.raises(ValueError, match="depth"):
        UNet(depth=-1)
    with pytest.raises(ValueError, match="expects"):
        UNet(1, 1, 4, 1)(torch.randn(1, 2, 8, 8))


def test_fbpconvnet_is_fbp_plus_unet(radon):
    net = FBPConvNet(radon, channels=4, depth=2, seed=0).eval()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = radon(x)
    x0 = radon.fbp(y)
    assert torch.equal(net(y), x0)  # the zero last layer makes an untrained FBPConvNet plain FBP
    randomize_head(net)
    out = net(y)
    assert out.shape == (2, 1, 32, 32)
    u = net.unet(x0)
    assert float(u.detach().abs().max()) > 1e-2  # the U-Net term is not negligible ...
    torch.testing.assert_close(out, x0 + u, rtol=0, atol=1e-6)  # ... and f adds it to FBP
    assert float((out - x0).abs().max()) > 1e-2  # a forward that dropped the U-Net output fails here
    # the operator is held one way (a submodule) and adds nothing to the state dict
    assert net.operator is radon and dict(net.named_children())["operator"] is radon
    assert not any(k.startswith("operator") for k in net.state_dict())


def test_fbpconvnet_gradient_reaches_the_sinogram(radon):
    net = FBPConvNet(radon, channels=4, depth=1, seed=0)
    y = radon(torch.rand(1, 1, 32, 32)).requires_grad_(True)
    net(y).square().sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


@pytest.mark.parametrize("image_shape", [(8, 8), (40,)])
@pytest.mark.parametrize("init", ["adjoint", "pinv"])
def test_cs_residual_net(image_shape, init):
    n = math.prod(image_shape)
    op = GaussianCS(20, image_shape, seed=0)
    net = randomize_head(CSResidualNet(op, channels=4, depth=2, init=init, seed=0).eval())
    y = op(torch.randn(3, n, generator=torch.Generator().manual_seed(0)))
    out = net(y)
    assert out.shape == (3, n)
    x0 = op.adjoint(y) if init == "adjoint" else op.pinv(y)
    img = x0.reshape(3, 1, *image_shape)
    u = net.unet(img).reshape(3, n)
    assert float(u.abs().max()) > 1e-2
    torch.testing.assert_close(out, x0 + u, rtol=0, atol=1e-6)
    assert float((out - x0).abs().max()) > 1e-2  # the U-Net output is not dropped
    # the other init gives another x0: the network really uses the one it was asked for
    other = op.pinv(y) if init == "adjoint" else op.adjoint(y)
    assert float((x0 - other).abs().max()) > 1e-3


def test_residual_reconstruction_serves_ct_and_cs(radon):
    """One class: CT (x0 = FBP = radon.pinv) and CS (x0 = A^+ y); FBPConvNet / CSResidualNet are the same model."""
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = radon(x)
    ct = randomize_head(ResidualReconstruction(radon, 4, 1, seed=0).eval())
    fbpconv = FBPConvNet(radon, 4, 1, seed=0).eval()
    fbpconv.load_state_dict(ct.state_dict())
    assert torch.equal(ct(y), fbpconv(y))
    assert torch.equal(radon.pinv(y), radon.fbp(y))
    op = GaussianCS(20, (8, 8), seed=0)
    cs = ResidualReconstruction(op, 4, 1, init="pinv", seed=0).eval()
    legacy = CSResidualNet(op, 4, 1, init="pinv", seed=0).eval()
    assert cs.state_dict().keys() == legacy.state_dict().keys()
    v = op(torch.randn(2, 64, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(cs(v), legacy(v))
    again = build_model(cs.to_config(), op, seed=3)
    assert type(again) is ResidualReconstruction and again.to_config() == cs.to_config()
    with pytest.raises(TypeError, match="RadonTransform"):
        FBPConvNet(op, 4, 1)


def test_linear_reconstruction_is_B_y():
    init = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    f = LinearReconstruction(4, 6, init=init)
    y = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(f(y), (init @ y.T).T, atol=1e-6)
    assert torch.count_nonzero(LinearReconstruction(4, 6).B) == 0
    with pytest.raises(ValueError, match="expects"):
        f(torch.randn(5, 3))


def test_eps_radius_and_projection():
    y = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert torch.allclose(eps_radius(y, 0.1), torch.tensor([0.5, 0.1]))
    assert torch.allclose(eps_radius(y, 0.1, relative=False), torch.tensor([0.1, 0.1]))
    d = torch.tensor([[6.0, 8.0], [0.01, 0.0]])
    p = project_l2_ball(d, torch.tensor([1.0, 1.0]))
    assert torch.allclose(p[0], torch.tensor([0.6, 0.8]))  # outside: scaled onto the sphere
    assert torch.equal(p[1], d[1])  # inside: unchanged
    assert torch.allclose(project_l2_ball(d, 2.0).norm(dim=1), torch.tensor([2.0, 0.01]))
    assert torch.equal(project_l2_ball(torch.zeros(2, 3), 1.0), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="eps"):
        eps_radius(y, -1.0)


@pytest.mark.parametrize("shape", [(1, 12, 17), (30,)])
@pytest.mark.parametrize("relative", [True, False])
def test_adversary_stays_in_the_ball(shape, relative, global_rng_untouched):
    g = Adversary(shape, eps=0.05, relative=relative, channels=4, mode="project", seed=0)
    with torch.no_grad():  # make the raw output large so the projection is active
        g.net[-1].weight.mul_(1e3)
    y = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2)) * 7.0
    delta = g(y)
    assert delta.shape == y.shape
    norms = delta.flatten(1).norm(dim=1)
    radius = eps_radius(y, 0.05, relative)
    assert torch.all(norms <= radius * (1 + 1e-5))
    assert torch.allclose(norms, radius, rtol=1e-4)  # large raw output lands on the sphere
    pen = Adversary(shape, eps=0.05, relative=relative, channels=4, mode="penalty", seed=0)
    with torch.no_grad():
        pen.net[-1].weight.mul_(1e3)
    free = pen(y)
    assert torch.all(free.flatten(1).norm(dim=1) > radius)  # no projection in penalty form
    assert torch.all(pen.penalty(free, y) > 0) and torch.all(pen.penalty(delta, y) < 1e-8)


@pytest.mark.parametrize("shape", [(1, 6, 9), (12,)])
def test_adversary_sphere_mode_spends_the_whole_budget(shape, global_rng_untouched):
    g = Adversary(shape, eps=0.05, channels=4, mode="sphere", seed=0)
    y = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    projected = Adversary(shape, eps=0.05, channels=4, mode="project", seed=0)(y)  # fresh G: raw output well inside the ball
    delta = g(y)
    radius = eps_radius(y, 0.05)
    assert torch.all(projected.flatten(1).norm(dim=1) < 0.5 * radius)
    assert torch.allclose(delta.flatten(1).norm(dim=1), radius, rtol=1e-5)
    cos = torch.nn.functional.cosine_similarity(delta.flatten(1), projected.flatten(1), dim=1)
    assert torch.allclose(cos, torch.ones(3), atol=1e-5)  # same direction, rescaled


def test_adversary_scale_invariant_for_relative_eps():
    g = Adversary((1, 6, 9), eps=0.01, channels=4, seed=0)
    y = torch.rand(2, 1, 6, 9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(g(10 * y), 10 * g(y), rtol=1e-4, atol=1e-7)


def test_build_model_round_trip(radon):
    op = GaussianCS(10, (4, 4), seed=0)
    models = [(FBPConvNet(radon, 4, 2, "hann", norm="group", seed=0), radon, radon(torch.rand(2, 1, 32, 32))),
              (CSResidualNet(op, 4, 1, seed=0), op, torch.randn(2, 10)),
              (LinearReconstruction(10, 16, init=torch.randn(16, 10)), None, torch.randn(2, 10)),
              (UNet(1, 1, 4, 2, seed=0), None, torch.randn(2, 1, 12, 12)),
              (Adversary((10,), 0.1, channels=2, seed=0), None, torch.randn(2, 10))]
    randomize_head(models[0][0])
    randomize_head(models[1][0])
    for model, operator, inp in models:
        model.eval()
        again = build_model(model.to_config(), operator, seed=99).eval()
        fresh = again(inp)  # seed 99's own weights (residual nets: the zero head, so x0 itself)
        again.load_state_dict(model.state_dict())
        assert type(again) is type(model) and again.to_config() == model.to_config()
        assert torch.equal(again(inp), model(inp))
        assert not torch.equal(fresh, model(inp))  # the check above compares the loaded weights, not x0 == x0
    with pytest.raises(ValueError, match="unknown model type"):
        build_model({"type": "Nope"})
    with pytest.raises(ValueError, match="operator"):
        build_model(FBPConvNet(radon, 4, 1).to_config())
