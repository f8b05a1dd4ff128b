"""Learned Primal-Dual (ctrobust.models.unrolled): the operator really is inside (hand-set weights make it
Landweber's iteration; a zero operator changes the output), zero-initialised blocks return the initial
iterate exactly, the gradient w.r.t. ``y`` matches finite differences, and it trains with every objective,
checkpoints, rebuilds and is attacked like FBPConvNet -- for parallel beam, fan beam and CS operators."""

import json
import math

import pytest

from ctrobust.attacks import AttackSettings
import torch

from ctrobust.attacks import pga_attack
from ctrobust.data import load_split
from ctrobust.models import LearnedPrimalDual, build_model
from ctrobust.operators.base import LinearOperator
from ctrobust.operators.cs import GaussianCS
from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D
from ctrobust.operators.radon import RadonTransform
from ctrobust.training import OBJECTIVES, fit, make_objective
from ctrobust.training.checkpoint import load_checkpoint, save_model

OPERATORS = {
    "parallel": lambda: RadonTransform(ParallelBeam2D(12, 5)),
    "fan": lambda: RadonTransform(FanBeam2D(12, 6)),
    "cs": lambda: GaussianCS(14, (5, 4), seed=2),
}


@pytest.fixture(scope="module", params=list(OPERATORS))
def op(request):
    return OPERATORS[request.param]()


def images(op, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *op.domain_shape), generator=gen, dtype=torch.float64)


def small(op, **kw):
    return LearnedPrimalDual(op, **{"iterations": 2, "primal_memory": 3, "dual_memory": 2, "channels": 4, "seed": 0,
                                    **kw})


def randomize(model, seed=1):
    """Random weights everywhere (PReLU slopes too), so no layer is a zero map."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    return model


class ZeroOperator(LinearOperator):
    """Same shapes as ``op``, maps everything to zero: a network that ignores its operator cannot tell."""

    def __init__(self, op):
        super().__init__(op.domain_shape, op.range_shape)
        self.image_shape = op.image_shape

    def _matvec(self, x):
        return x.new_zeros((x.shape[0], *self.range_shape))

    def _rmatvec(self, y):
        return y.new_zeros((y.shape[0], *self.domain_shape))


def _center(w):
    """Index of the centre tap of a conv weight ``(cout, cin, *kernel)``."""
    return tuple(k // 2 for k in w.shape[2:])


def as_landweber(model, step):
    """Set the weights so every iteration is ``x <- x - step K^T (K x - g)`` (PReLU slope 1: linear blocks)."""
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for block in (*model.dual_blocks, *model.primal_blocks):
            block[1].weight.fill_(1.0)
            block[3].weight.fill_(1.0)
            c = _center(block[0].weight)
            block[2].weight[(0, 0, *c)] = 1.0
        for block in model.dual_blocks:  # inputs [h_0, K f_1, g] -> h_0 + (K f_1 - g - h_0) = K f_1 - g
            c = _center(block[0].weight)
            block[0].weight[(0, 0, *c)] = -1.0
            block[0].weight[(0, 1, *c)] = 1.0
            block[0].weight[(0, 2, *c)] = -1.0
            block[4].weight[(0, 0, *c)] = 1.0
        for block in model.primal_blocks:  # inputs [f_0, f_1, K^T h_0] -> f_c - step K^T h_0 in both channels
            c = _center(block[0].weight)
            block[0].weight[(0, 2, *c)] = -step
            block[4].weight[(0, 0, *c)] = 1.0
            block[4].weight[(1, 0, *c)] = 1.0
    return model


@pytest.mark.parametrize("init", ["zero", "fbp"])
def test_hand_set_weights_are_landweber_with_the_exact_operator(op, init):
    """The result is computed here with op() and op.adjoint() directly; dropping the operator, using a wrong
    adjoint, a wrong scale or a wrong channel would all change it."""
    scale = 1.7 * op.norm()
    model = LearnedPrimalDual(op, iterations=3, primal_memory=2, dual_memory=1, channels=2, init=init, scale=scale,
                              seed=0).double()
    as_landweber(model, step=0.9)
    x = images(op)
    y = op(x)
    ref = op.pinv(y) if init == "fbp" else torch.zeros_like(x)
    for _ in range(3):
        ref = ref - 0.9 / scale**2 * op.adjoint(op(ref) - y)
    with torch.no_grad():
        out = model(y)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
    if not (init == "fbp" and isinstance(op, GaussianCS)):  # A^+ y solves A x = y exactly (m < n): a fixed point
        assert float((ref - (op.pinv(y) if init == "fbp" else 0)).abs().max()) > 1e-3  # the iterations moved


@pytest.mark.parametrize("init", ["zero", "fbp"])
def test_zero_initialised_blocks_return_the_initial_iterate_exactly(op, init):
    model = small(op, init=init, zero_init=True).double()
    y = op(images(op))
    with torch.no_grad():
        out = model(y)
    expected = op.pinv(y) if init == "fbp" else torch.zeros_like(out)
    assert torch.equal(out, expected)
    if init == "fbp":
        assert float(expected.abs().max()) > 0


def test_the_operator_inside_matters(op):
    model = randomize(small(op, scale=op.norm()).double())
    y = op(images(op))
    with torch.no_grad():
        out = model(y)
        model.operator = ZeroOperator(op)
        blind = model(y)
    assert float((out - blind).abs().max()) > 1e-3 * float(out.abs().max())


def test_gradient_wrt_y_matches_finite_differences(op):
    model = randomize(small(op, iterations=2, channels=3).double())
    y = op(images(op, batch=1)).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(model, (y,), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_config_rebuilds_the_same_network_and_the_operator_is_not_in_the_state_dict(op):
    model = randomize(small(op, init="fbp" if op.has_pinv else "zero"))
    cfg = model.config()
    assert cfg["type"] == "lpd" and model.to_config() == cfg
    assert json.loads(json.dumps(cfg)) == cfg
    assert not any(k.startswith("operator") for k in model.state_dict())
    again = build_model(cfg, op)
    again.load_state_dict(model.state_dict())
    y = op(images(op).float())
    with torch.no_grad():
        assert torch.equal(again(y), model(y))
    assert again.scale == model.scale  # stored, not recomputed


def _saved_bytes(model, y):
    """Bytes autograd keeps for the backward pass of ``model(y)`` (what gradient checkpointing reduces)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(y).square().sum()
    return total[0]


def test_checkpointing_gives_the_same_function_and_gradients_and_keeps_less(op):
    plain = randomize(small(op, iterations=3, channels=6, scale=op.norm()).double())
    ckpt = build_model({**plain.config(), "checkpointing": True}, op).double()
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.checkpointing and ckpt.config()["checkpointing"] is True and "checkpointing" not in plain.config()
    y = op(images(op, batch=2)).detach()
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        yg = y.clone().requires_grad_(True)
        out = model(yg)
        out.square().sum().backward()
        grads.append((out.detach(), yg.grad, [p.grad.clone() for p in model.parameters()]))
    (o1, gy1, gp1), (o2, gy2, gp2) = grads
    assert torch.equal(o1, o2)
    torch.testing.assert_close(gy2, gy1, rtol=1e-12, atol=1e-14)
    for a, b in zip(gp1, gp2):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    # the double backward of the attack's linearisation (J v through the gradient) goes through it too
    v = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    jv = []
    for model in (plain, ckpt):
        yg = y.clone().requires_grad_(True)
        out = model(yg)
        w = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, yg, w, create_graph=True)
        (j,) = torch.autograd.grad(g, w, v)
        jv.append(j)
    torch.testing.assert_close(jv[1], jv[0], rtol=1e-12, atol=1e-14)
    # autograd keeps each iteration's input only: far less than every block's activations
    assert _saved_bytes(ckpt, y) < 0.5 * _saved_bytes(plain, y)
    with torch.no_grad():  # nothing to recompute without gradients: the plain forward
        assert torch.equal(ckpt(y), o1)


def test_resuming_with_checkpointing_switched_is_accepted_another_width_is_not(tmp_path):
    op = OPERATORS["parallel"]()
    data = _data(op)
    run = tmp_path / "run"
    fit(small(op), op, "plain", data, max_steps=1, batch_size=2, out=run, progress=False)
    fit(small(op, checkpointing=True), op, "plain", data, max_steps=2, batch_size=2, out=run, resume=True,
        progress=False)
    with pytest.raises(Exception, match="different run"):
        fit(small(op, channels=5), op, "plain", data, max_steps=3, batch_size=2, out=run, resume=True, progress=False)


def test_defaults_are_the_papers():
    op = RadonTransform(ParallelBeam2D(12, 5))
    model = LearnedPrimalDual(op, seed=0)
    assert (model.iterations, model.primal_memory, model.dual_memory, model.channels, model.kernel, model.init) == (
        10, 5, 5, 32, 3, "zero")
    assert len(model.primal_blocks) == len(model.dual_blocks) == 10
    conv = model.dual_blocks[0][0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (7, 32, (3, 3))
    assert isinstance(model.dual_blocks[0][1], torch.nn.PReLU)
    assert model.primal_blocks[0][4].out_channels == 5
    assert math.isclose(model.scale, op.norm(iterations=50), rel_tol=1e-9)


def test_cs_dual_blocks_are_pointwise_and_seed_leaves_global_rng(global_rng_untouched):
    op = OPERATORS["cs"]()
    model = LearnedPrimalDual(op, iterations=1, channels=4, seed=3)
    assert isinstance(model.dual_blocks[0][0], torch.nn.Conv1d) and model.dual_blocks[0][0].kernel_size == (1,)
    assert isinstance(model.primal_blocks[0][0], torch.nn.Conv2d)  # on the 5 x 4 image
    again = LearnedPrimalDual(op, iterations=1, channels=4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("kwargs, match", [({"iterations": 0}, "iterations"), ({"kernel": 2}, "odd"),
                                           ({"init": "pinv"}, "init"), ({"scale": 0.0}, "scale"),
                                           ({"channels": 2.5}, "channels"), ({"checkpointing": 1}, "checkpointing")])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearnedPrimalDual(OPERATORS["parallel"](), **kwargs)


def _data(op, n=4):
    if isinstance(op, RadonTransform):
        return load_split(None, "train", size=op.image_shape[0], n_phantoms=n, seed=0)
    gen = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand((n, *op.domain_shape), generator=gen))


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_trains_with_every_objective(op, name, global_rng_untouched):
    model = small(op)
    before = [p.detach().clone() for p in model.parameters()]
    options = {"plain": {}, "weight-decay": {}, "parseval": {}, "pgd": {"eps": 0.02, "steps": 2}}.get(name, {"eps": 0.02})
    objective = make_objective(name, **options, seed=0)
    result = fit(model, op, objective, _data(op), max_steps=2, batch_size=2, lr=1e-3, progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_checkpoint_round_trip_and_attack(op, tmp_path):
    model = small(op)
    fit(model, op, "plain", _data(op), max_steps=2, batch_size=2, progress=False)
    path = save_model(tmp_path / "lpd.pt", model)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, LearnedPrimalDual) and loaded.config() == model.config()
    x = images(op, batch=2).float()
    y = op(x)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(y), model(y))
    result = pga_attack(loaded, y, x, eps=0.05, settings=AttackSettings(steps=4), generator=torch.Generator().manual_seed(0))
    assert torch.all(result.delta.flatten(1).norm(dim=1) <= result.radius * (1 + 1e-5))
    with torch.no_grad():
        clean = ((loaded(y) - x) ** 2).flatten(1).sum(1).double()
    assert torch.all(result.error >= clean * (1 - 1e-6))
    assert float((result.error - clean).max()) > 0


def test_train_and_attack_on_the_command_line(tmp_path):
    from ctrobust.cli import main

    run = tmp_path / "lpd"
    assert main(["train", "--model", "lpd", "--model-option", "checkpointing=true", "--size", "16", "--angles", "6",
                 "--n-train", "4", "--n-val", "2", "--max-steps", "1", "--batch-size", "2", "--out", str(run),
                 "--no-progress"]) == 0
    model = load_checkpoint(run / "best.pt")
    assert isinstance(model, LearnedPrimalDual) and model.iterations == 10 and model.checkpointing
    out = tmp_path / "attack"
    assert main(["attack", "--checkpoint", str(run / "best.pt"), "--eps-grid", "0,0.01", "--steps", "2",
                 "--n-samples", "2", "--batch-size", "2", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"][0]["label"] == "lpd"


def test_step_timing_counts_the_operator_calls(tmp_path):
    """experiments/lpd_vs_fbpconvnet/timing.py: LPD applies A and A^T once per iteration each way (20 forward, 19
    backward: the first projection is of the constant zero start); FBPConvNet applies FBP's backprojection once."""
    from experiments.lpd_vs_fbpconvnet.timing import main as timing

    rows = timing(["--size", "16", "--angles", "5", "--batch", "2", "--repeats", "1", "--out", str(tmp_path / "t.csv")])
    calls = {r["model"]: r["operator_calls_per_step"] for r in rows}
    assert calls == {"fbpconvnet": 1, "lpd": 39}
    assert all(0 < r["operator_share"] < 1 for r in rows)
    assert (tmp_path / "t.csv").is_file()


def test_best_of_separate_runs_takes_each_samples_worst_case(tmp_path):
    """experiments/lpd_vs_fbpconvnet/table.py: two single-restart runs combine like --restarts 2 (per sample the
    larger squared error), not by averaging the runs' means."""
    from ctrobust.evaluation.report import write_csv
    from experiments.lpd_vs_fbpconvnet.table import best_of_runs

    def run(name, errors):
        rows = [{"model": "m", "eps": 0.0, "sample": i, "condition": "clean", "relative_error": 0.1, "sq_error": 0.01}
                for i in range(2)]
        rows += [{"model": "m", "eps": 0.01, "sample": i, "condition": "attack", "relative_error": e, "sq_error": e * e}
                 for i, e in enumerate(errors)]
        (tmp_path / name).mkdir()
        write_csv(rows, tmp_path / name / "samples.csv")
        return tmp_path / name

    rows = best_of_runs([run("m_e0.01_s0", [0.3, 0.2]), run("m_e0.01_s1", [0.1, 0.4])])
    assert len(rows) == 1 and rows[0]["n"] == 2 and rows[0]["runs"] == 2
    assert rows[0]["rel_err_attack"] == pytest.approx(0.35) and rows[0]["rel_err_attack_std"] == pytest.approx(0.05)
    assert rows[0]["rel_err_clean"] == pytest.approx(0.1)
