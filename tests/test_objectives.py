"""Objectives: each loss falls, min-max moves both players inside the ball, PGD/universal/jitter
perturbations, Parseval retraction, weight decay."""

import math

import pytest
import torch

from ctrobust.data import load_split
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.models import Adversary, CSResidualNet, FBPConvNet, LinearReconstruction, eps_radius
from ctrobust.operators.cs import GaussianCS
from ctrobust.operators.radon import RadonTransform
from ctrobust.training import OBJECTIVES, build_objective, fit, make_objective
from ctrobust.training.objectives import Universal
from ctrobust.training.objectives import PGD, Jitter, MinMax, Universal, mse
from ctrobust.training.parseval import orthogonal_init, orthogonality_error, retract


@pytest.fixture(scope="module")
def ct():
    op = RadonTransform(ParallelBeam2D(32, 16))
    return op, load_split(None, "train", size=32, n_phantoms=4, seed=0)


def _fixed_loss(model, op, data, objective):
    """The clean per-pixel MSE on the whole (tiny) training set, network in training mode."""
    x = torch.stack([data[i] for i in range(len(data))])
    with torch.no_grad():
        return float(mse(model(op(x)), x))


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_loss_falls_for_each_objective(name, ct, global_rng_untouched):
    op, data = ct
    model = FBPConvNet(op, channels=4, depth=2, seed=0)
    options = {"pgd": {"eps": 0.02, "steps": 2}, "parseval": {"beta": 1e-3}, "universal": {"eps": 0.02, "steps": 1}}.get(
        name, {"eps": 0.02} if name in ("minmax", "universal", "jitter") else {})
    objective = build_objective(name, **options, seed=0)
    before = _fixed_loss(model, op, data, objective)
    result = fit(model, op, objective, data, max_steps=16, batch_size=4, lr=3e-3, scheduler="constant", progress=False)
    model.train()
    after = _fixed_loss(model, op, data, objective)
    # min-max's total loss need not fall (its adversary grows stronger): its clean part must
    losses = [h["clean" if name == "minmax" else "loss"] for h in result.history]
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses)
    # The network starts as FBP (zero-initialised last layer), so "before" is already FBP quality.
    # min-max's G spends its whole budget from the first step, so its clean loss falls more slowly.
    assert after < (0.8 if name == "minmax" else 0.75) * before, (name, before, after)
    assert losses[-1] < losses[0]


def test_minmax_moves_both_players_and_stays_in_the_ball(ct, global_rng_untouched):
    op, data = ct
    model = FBPConvNet(op, channels=4, depth=1, seed=0)
    f0 = [p.detach().clone() for p in model.parameters()]
    objective = MinMax(eps=0.05, g_steps=2, g_lr=1e-2, channels=4, mode="project", seed=5)
    seen = []

    def record(module, inputs, output):
        y = inputs[0]
        seen.append((output.detach().flatten(1).norm(dim=1), eps_radius(y, 0.05)))

    fit(model, op, objective, data, max_steps=3, batch_size=2, progress=False,
        callbacks=[lambda s, logs: None])
    # G after training differs from its initialisation (same seed -> same start)
    fresh = Adversary(op.range_shape, 0.05, True, 4, mode="project", seed=5)
    moved_g = [not torch.equal(a, b) for a, b in zip(objective.adversary.parameters(), fresh.parameters())]
    assert all(moved_g)
    assert any(not torch.equal(a, b) for a, b in zip(f0, model.parameters()))
    # G's outputs never leave the ball, over further G and f steps
    objective.adversary.register_forward_hook(record)
    model.train()
    x = torch.stack([data[i] for i in range(4)])
    y = op(x)
    for _ in range(3):
        objective.perturbation(model, x, y)
    assert len(seen) == 9
    for norms, radius in seen:
        assert torch.all(norms <= radius * (1 + 1e-5))
    assert any(torch.any(n > 0.5 * r) for n, r in seen)  # and G uses the ball


def test_minmax_penalty_form_pulls_back_into_the_ball():
    torch.manual_seed(0)
    op = GaussianCS(12, (4, 4), seed=0)
    model = LinearReconstruction(12, 16)
    obj = MinMax(eps=0.1, mode="penalty", penalty_weight=100.0, g_lr=5e-2, channels=2, seed=0)
    obj.setup(model, op)
    with torch.no_grad():
        obj.adversary.net[-1].weight.mul_(50.0)
        obj.adversary.net[-1].bias.mul_(50.0)
    x = torch.randn(8, 16)
    y = op(x)
    ratio = lambda: float((obj.adversary(y).detach().flatten(1).norm(dim=1) / eps_radius(y, 0.1)).max())
    start = ratio()
    assert start > 2
    for _ in range(200):
        obj.ascend(model, x, y)
    assert ratio() < 0.5 * start


def test_pgd_finds_worse_perturbations_than_noise(ct):
    op, data = ct
    model = FBPConvNet(op, channels=4, depth=1, seed=0).eval()
    x = torch.stack([data[i] for i in range(2)])
    y = op(x)
    pgd = PGD(eps=0.05, steps=5, seed=0)
    pgd.setup(model, op)
    delta = pgd.perturbation(model, x, y)
    radius = eps_radius(y, 0.05)
    assert torch.all(delta.flatten(1).norm(dim=1) <= radius * (1 + 1e-5))
    noise = Jitter(eps=0.05, seed=0)
    noise.setup(model, op)
    with torch.no_grad():
        worst = ((model(y + delta) - x) ** 2).flatten(1).mean(1)
        rand = ((model(y + noise.perturbation(model, x, y)) - x) ** 2).flatten(1).mean(1)
    assert torch.all(worst > rand)


def test_jitter_has_the_same_level():
    op = GaussianCS(400, (20,), seed=0)
    obj = Jitter(eps=0.1, seed=0)
    model = LinearReconstruction(400, 20)
    obj.setup(model, op)
    y = torch.randn(64, 400)
    ratio = obj.perturbation(model, None, y).norm(dim=1) / eps_radius(y, 0.1)
    assert abs(float(ratio.mean()) - 1) < 0.02 and float(ratio.std()) < 0.1


def test_universal_is_shared_and_persistent_with_a_linear_cs_model(global_rng_untouched):
    op = GaussianCS(12, (16,), seed=0)
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 16, generator=gen))
    model = LinearReconstruction(12, 16, dtype=torch.float64)
    obj = Universal(eps=0.1, steps=3, seed=0)
    fit(model, op, obj, data, max_steps=20, batch_size=8, lr=1e-2, progress=False)
    assert obj.u.shape == (1, 12) and obj.u.dtype == torch.float64
    assert float(obj.u.norm()) <= 1 + 1e-9
    assert model.B.abs().sum() > 0
    y = op(torch.randn(4, 16, generator=gen, dtype=torch.float64))
    delta = obj.perturbation(model, op.adjoint(y), y)
    direction = delta / eps_radius(y, 0.1)[:, None]
    assert torch.allclose(direction, direction[:1].expand_as(direction))  # one direction for the batch


def test_weight_decay_adds_mu_times_the_squared_norm():
    op = GaussianCS(6, (8,), seed=0)
    model = LinearReconstruction(6, 8, init=torch.ones(8, 6))
    x = torch.randn(3, 8)
    y = op(x)
    loss, logs = build_objective("weight-decay", mu=0.5).loss(model, x, y)
    assert math.isclose(float(loss.detach()), float(mse(model(y), x).detach()) + 0.5 * 48, rel_tol=1e-6)
    assert math.isclose(logs["weight_norm2"], 48.0, rel_tol=1e-6)


@pytest.mark.parametrize("shape", [(6, 20), (20, 6), (4, 3, 3, 3)])
def test_parseval_retraction_converges_to_orthonormal(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(w / torch.linalg.matrix_norm(w.reshape(shape[0], -1), 2))
    start = orthogonality_error(layer)["weight"]
    for _ in range(400):
        retract(layer, beta=0.1)
    end = orthogonality_error(layer)["weight"]
    assert start > 0.3 and end < 1e-6
    s = torch.linalg.svdvals(layer.weight.detach().reshape(shape[0], -1))
    assert torch.allclose(s, torch.ones_like(s), atol=1e-6)


def test_parseval_keeps_weights_closer_to_orthonormal_than_plain(global_rng_untouched):
    op = GaussianCS(48, (8, 8), seed=0)
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(16, 64, generator=gen))
    errors = {}
    for name in ("plain", "parseval"):
        model = CSResidualNet(op, channels=4, depth=1, seed=0)
        orthogonal_init(model, torch.Generator().manual_seed(0), keep_zero=False)  # both start orthonormal
        assert max(orthogonality_error(model).values()) < 1e-5
        fit(model, op, build_objective(name, **({"beta": 3e-2} if name == "parseval" else {}), seed=0), data, max_steps=30, batch_size=8, lr=1e-2,
            progress=False)
        errors[name] = max(orthogonality_error(model).values())
    assert errors["parseval"] < 0.15 and errors["parseval"] < 0.5 * errors["plain"], errors


def test_objective_configs_rebuild():
    for name in OBJECTIVES:
        perturbed = name in ("minmax", "pgd", "universal", "jitter")
        obj = build_objective(name, **({"eps": 0.03, "lam": 2.0} if perturbed else {}), seed=4)
        again = build_objective(obj.to_config())
        assert type(again) is type(obj) and again.to_config() == obj.to_config()
        assert again.to_config() == {"name": name, **{k: v for k, v in obj.to_config().items() if k != "name"}}
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("robust")


def test_objectives_are_built_as_the_class_with_its_own_defaults():
    """One construction path: build_objective(name, **options) is OBJECTIVES[name](**options), so a name alone
    gives the class's signature defaults (the universal objective's 3 ascent steps, not another layer's 1)."""
    import inspect

    for name, cls in OBJECTIVES.items():
        assert build_objective(name).to_config() == cls().to_config()
    assert build_objective("universal").steps == inspect.signature(Universal).parameters["steps"].default == 3
    assert make_objective is build_objective
    with pytest.raises(ValueError, match="takes no option 'pgd_steps'"):
        build_objective("pgd", pgd_steps=2)  # options are the class's keywords, checked by name
