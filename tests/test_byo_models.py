"""Your own model, end to end (issue 21): a network defined in a user's module (tests/byo_models.py) is named by
its factory, trains through ``ctrobust train --model module:factory``, is checkpointed as import path + JSON
options + state dict, and is rebuilt from the checkpoint alone by a fresh process (``load_checkpoint``,
``ctrobust attack``). ``fit`` refuses at the start a model it could not checkpoint."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import byo_models
from ctrobust.errors import CtrobustError
from ctrobust.models import build_model, model_config, register_model
from ctrobust.models.registry import MODELS, check_checkpointable
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.operators.radon import RadonTransform
from ctrobust.training import fit
from ctrobust.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _run(args, cwd, *, with_tests=True, timeout=300):
    """``python -m ctrobust ARGS`` (or ``python -c``) in a fresh process; tests/ on its path only if asked. The
    operator cache lives beside the run (the per-test cache variable is not set for module fixtures)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + ([str(TESTS)] if with_tests else [])),
           "CTROBUST_CACHE_DIR": str(Path(cwd) / "cache")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of ``ctrobust train --model byo_models:make_tiny --model-option width=3`` (tiny sizes, 2 steps)."""
    root = tmp_path_factory.mktemp("byo")
    res = _run(["-m", "ctrobust", "train", "--model", "byo_models:make_tiny", "--model-option", "width=3",
                "--size", "16", "--angles", "12", "--n-train", "8", "--n-val", "4", "--batch-size", "4",
                "--max-steps", "2", "--out", "run", "--no-progress", "--device", "cpu"], root)
    assert res.returncode == 0, res.stderr
    return root


def test_a_user_model_trains_through_the_cli_and_its_checkpoint_names_its_factory(trained):
    data = read_checkpoint(trained / "run" / "best.pt")  # weights_only=True: no pickled classes inside
    assert data["model"]["config"] == {"type": "byo_models:make_tiny", "width": 3}
    assert data["model"]["factory"] == "byo_models:make_tiny"
    assert set(data["model"]["state"]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert data["model"]["state"]["net.0.weight"].shape == (3, 1, 3, 3)  # the JSON option reached the factory
    assert json.loads((trained / "run" / "config.json").read_text())["model"]["type"] == "byo_models:make_tiny"


def test_a_fresh_process_rebuilds_the_user_model_from_the_checkpoint_alone(trained):
    code = ("import torch, ctrobust; m = ctrobust.load_checkpoint('run/best.pt'); "
            "y = torch.ones(1, *m.operator.range_shape); "
            "print(type(m).__name__, type(m).__module__, float(m(y).sum()))")
    res = _run(["-c", code], trained)
    assert res.returncode == 0, res.stderr
    name, module, total = res.stdout.split()
    assert (name, module) == ("TinyFBPCNN", "byo_models")
    here = load_checkpoint(trained / "run" / "best.pt")  # the same weights in this process
    with torch.no_grad():
        want = float(here(torch.ones(1, *here.operator.range_shape)).sum())
    assert float(total) == pytest.approx(want, rel=1e-6)
    stored = read_checkpoint(trained / "run" / "best.pt")["model"]["state"]
    assert torch.equal(here.net[0].weight, stored["net.0.weight"])  # trained weights, not a fresh initialisation


def test_ctrobust_attack_attacks_the_user_model(trained):
    res = _run(["-m", "ctrobust", "attack", "--checkpoint", "run/best.pt", "--n-samples", "2", "--steps", "2",
                "--eps-grid", "0,0.01", "--no-linearization", "--no-fbp", "--out", "att", "--device", "cpu",
                "--no-progress"], trained)
    assert res.returncode == 0, res.stderr
    summary = json.loads((trained / "att" / "summary.json").read_text())
    (model,) = summary["models"]
    assert model["info"]["model"] == {"config": {"type": "byo_models:make_tiny", "width": 3},
                                      "factory": "byo_models:make_tiny"}
    rows = list(csv.DictReader((trained / "att" / "summary.csv").open()))
    assert {r["model"] for r in rows} == {"run"} and {float(r["eps"]) for r in rows} == {0.0, 0.01}
    clean = [float(r["mse_mean"]) for r in rows if float(r["eps"]) == 0]
    attacked = [float(r["mse_mean"]) for r in rows if float(r["eps"]) == 0.01]
    assert max(attacked) > max(clean)  # the attack moved the user model's error


def test_a_checkpoint_whose_factory_cannot_be_imported_is_a_clear_error(trained):
    # byo_models is not on the path of this process: exit 1, the module named, nothing attacked
    res = _run(["-m", "ctrobust", "attack", "--checkpoint", "run/best.pt", "--n-samples", "1", "--steps", "1",
                "--out", "att-missing", "--device", "cpu", "--no-progress"], trained, with_tests=False)
    assert res.returncode == 1, res.stderr
    assert "byo_models" in res.stderr and "cannot import module" in res.stderr and "Traceback" not in res.stderr
    assert not (trained / "att-missing" / "summary.json").exists()


def test_load_checkpoint_names_the_missing_module(trained, tmp_path):
    data = read_checkpoint(trained / "run" / "best.pt")
    data["model"]["config"] = {"type": "no_such_pkg.nets:make_net", "width": 3}
    data["model"]["factory"] = "no_such_pkg.nets:make_net"
    save_checkpoint(tmp_path / "gone.pt", {k: v for k, v in data.items() if k not in ("format", "version")})
    with pytest.raises(CtrobustError, match="cannot import module 'no_such_pkg.nets'"):
        load_checkpoint(tmp_path / "gone.pt")


def _tiny_setup():
    op = RadonTransform(ParallelBeam2D(16, 8))
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    return op, data


class _Bare(nn.Module):
    def __init__(self, operator):
        super().__init__()
        self.operator = operator
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, y):
        self.calls += 1
        return self.scale * self.operator.pinv(y)


def test_fit_refuses_a_bare_module_at_the_start_saying_what_to_add(tmp_path):
    op, data = _tiny_setup()
    model = _Bare(op)
    with pytest.raises(CtrobustError, match=r"no description.*build_model\(\{'type': 'package.module:factory'"):
        fit(model, op, "plain", data, max_steps=2, batch_size=4, out=tmp_path / "run", progress=False)
    assert model.calls == 0 and not (tmp_path / "run").exists()  # refused before any training or file
    result = fit(model, op, "plain", data, max_steps=1, batch_size=4, progress=False)  # no out: nothing to save
    assert result.steps == 1 and model.calls > 0


def test_fit_checkpoints_a_model_built_from_a_user_factory(tmp_path):
    op, data = _tiny_setup()
    model = build_model({"type": "byo_models:make_tiny", "width": 2}, op, seed=1)
    assert model_config(model) == {"type": "byo_models:make_tiny", "width": 2}
    fit(model, op, "plain", data, max_steps=2, batch_size=4, out=tmp_path / "run", progress=False)
    again = load_checkpoint(tmp_path / "run" / "last.pt")
    assert isinstance(again, byo_models.TinyFBPCNN)
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(), model.net.state_dict().values()))


def test_a_registered_name_is_rebuilt_through_its_stored_factory_path(tmp_path):
    op, data = _tiny_setup()
    model = build_model({"type": "byo-tiny"}, op, seed=0)
    fit(model, op, "plain", data, max_steps=1, batch_size=4, out=tmp_path / "run", progress=False)
    stored = read_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert stored["config"] == {"type": "byo-tiny"} and stored["factory"] == "byo_models:make_registered"
    saved = MODELS._entries.pop("byo-tiny")  # a fresh process that has not imported byo_models yet
    try:
        again = load_checkpoint(tmp_path / "run" / "last.pt")
        assert isinstance(again, byo_models.TinyFBPCNN) and again.net[0].weight.shape[0] == 2
    finally:
        MODELS._entries["byo-tiny"] = saved


def test_what_cannot_be_rebuilt_by_another_process_is_refused(tmp_path):
    op, _ = _tiny_setup()

    class Described(_Bare):
        def to_config(self):
            return {"type": "Described"}  # neither a registered name nor an import path

    with pytest.raises(CtrobustError, match="neither a registered model name nor an import path"):
        check_checkpointable(Described(op))

    def scripted(operator):  # as if defined in the script being run
        return _Bare(operator)

    scripted.__module__ = "__main__"
    register_model("scripted-test", scripted)
    try:
        with pytest.raises(CtrobustError, match=r"__main__.*move the factory into a module"):
            check_checkpointable(build_model({"type": "scripted-test"}, op))
    finally:
        MODELS._entries.pop("scripted-test")
    with pytest.raises(CtrobustError, match="not JSON-able"):
        check_checkpointable(_with_config(op, {"type": "byo_models:make_tiny", "width": object()}))


def _with_config(op, cfg):
    model = _Bare(op)
    model.to_config = lambda: cfg
    return model


def test_unknown_options_and_names_are_refused_before_training():
    op, _ = _tiny_setup()
    with pytest.raises(ValueError, match="takes no option 'depth'"):
        build_model({"type": "byo_models:make_tiny", "depth": 3}, op)
    with pytest.raises(ValueError, match="unknown model type 'nope'"):
        build_model({"type": "nope"}, op)
    with pytest.raises(CtrobustError, match="module 'byo_models' has no 'missing'"):
        build_model({"type": "byo_models:missing"}, op)


def test_ctrobust_evaluate_rebuilds_the_user_model_on_a_shifted_geometry(trained):
    res = _run(["-m", "ctrobust", "evaluate", "--checkpoint", "run/best.pt", "--n-samples", "2", "--shift", "views",
                "--shift-angles", "8", "--no-fbp", "--out", "ev", "--device", "cpu", "--no-progress"], trained)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((trained / "ev" / "shift.csv").open()))
    assert [r["model"] for r in rows] == ["run"] and rows[0]["shifted"] == "views_8"  # rebuilt on 8 views
