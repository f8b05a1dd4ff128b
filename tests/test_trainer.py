"""Trainer: checkpoints round trip, corrupt files, exact resume, NaN stop, --out refusal, the CLI."""

import json

import pytest
import torch

from ctrobust.cli import main
from ctrobust.data import load_split
from ctrobust.errors import CtrobustError
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.models import FBPConvNet, LinearReconstruction
from ctrobust.operators.cs import GaussianCS
from ctrobust.operators.radon import RadonTransform
from ctrobust.app import TrainSpec, run_train
from ctrobust.training import NonFiniteLossError, fit, load_checkpoint, read_checkpoint
from ctrobust.training.objectives import Jitter, MinMax

TINY = ["--angles", "12", "--size", "32", "--channels", "4", "--depth", "2", "--n-train", "8", "--n-val", "2",
        "--batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def ct():
    op = RadonTransform(ParallelBeam2D(32, 12))
    return op, load_split(None, "train", size=32, n_phantoms=12, seed=0), load_split(None, "val", size=32, n_phantoms=2)


class Interrupt:
    """A callback that raises KeyboardInterrupt after a given step (a killed run)."""

    def __init__(self, at):
        self.at = at

    def __call__(self, step, logs):
        if step == self.at:
            raise KeyboardInterrupt


def test_checkpoint_round_trip(ct, tmp_path, global_rng_untouched):
    op, tr, va = ct
    model = FBPConvNet(op, channels=4, depth=2, seed=0)
    result = fit(model, op, "plain", tr, va, max_steps=2, batch_size=4, out=tmp_path / "run", progress=False)
    loaded = load_checkpoint(result.last_checkpoint)
    assert isinstance(loaded, FBPConvNet) and not loaded.training
    assert isinstance(loaded.operator, RadonTransform) and loaded.operator.geometry == op.geometry
    y = op(torch.stack([va[0], va[1]]))
    with torch.no_grad():
        assert torch.equal(loaded(y), result.model.eval()(y))
    data = read_checkpoint(result.last_checkpoint)
    assert data["step"] == 2 and data["geometry"] == op.geometry.to_config()
    assert data["objective"]["config"]["name"] == "plain" and "val_psnr" in data["metrics"]
    assert set(data["rng"]) >= {"torch", "numpy", "python"} and data["data"]["n"] == 12
    assert (tmp_path / "run" / "best.pt").exists()
    torch.load(result.last_checkpoint, weights_only=True)  # only tensors and primitives inside


def test_cs_checkpoint_round_trip(tmp_path):
    op = GaussianCS(10, (4, 4), seed=3)
    data = torch.utils.data.TensorDataset(torch.rand(8, 16, generator=torch.Generator().manual_seed(0)))
    model = LinearReconstruction(10, 16)
    fit(model, op, "plain", data, max_steps=3, batch_size=4, lr=1e-2, out=tmp_path, progress=False)
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(loaded.B, model.B) and isinstance(loaded.operator, GaussianCS)
    assert torch.equal(loaded.operator.to_dense(), op.to_dense())


def test_bad_checkpoints_give_clear_errors(ct, tmp_path):
    with pytest.raises(CtrobustError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CtrobustError, match="corrupt, truncated"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CtrobustError, match="not a ctrobust checkpoint"):
        load_checkpoint(foreign)
    op, tr, _ = ct
    fit(FBPConvNet(op, 4, 1, seed=0), op, "plain", tr, max_steps=1, batch_size=4, out=tmp_path / "r", progress=False)
    whole = (tmp_path / "r" / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CtrobustError, match="corrupt, truncated"):
        load_checkpoint(truncated)
    data = read_checkpoint(tmp_path / "r" / "last.pt")
    data["model"]["config"]["channels"] = 8  # weights no longer fit the config
    torch.save(data, tmp_path / "mismatch.pt")
    with pytest.raises(CtrobustError, match="does not fit"):
        load_checkpoint(tmp_path / "mismatch.pt")


@pytest.mark.parametrize("kind", ["ct-minmax", "ct-minmax-memory", "ct-minmax-conditioned", "ct-minmax-project", "cs-jitter"])
def test_resume_equals_uninterrupted(kind, ct, tmp_path):
    if kind.startswith("ct-minmax"):
        op, tr, va = ct
        mode = {"ct-minmax": "shared", "ct-minmax-memory": "memory", "ct-minmax-conditioned": "conditioned",
                "ct-minmax-project": "project"}[kind]
        make_model = lambda: FBPConvNet(op, channels=4, depth=2, seed=0)  # noqa: E731
        make_obj = lambda: MinMax(eps=0.05, channels=4, g_steps=2, g_lr=1e-2, mode=mode, seed=1)  # noqa: E731
    else:
        op = GaussianCS(10, (4, 4), seed=0)
        tr = torch.utils.data.TensorDataset(torch.rand(12, 16, generator=torch.Generator().manual_seed(0)))
        va = None
        make_model = lambda: LinearReconstruction(10, 16)  # noqa: E731
        make_obj = lambda: Jitter(eps=0.1, seed=1)  # noqa: E731
    common = dict(max_steps=6, batch_size=4, lr=1e-2, seed=7, progress=False)  # 3 steps/epoch: crosses epochs
    obj_a, obj_b = make_obj(), make_obj()
    straight = fit(make_model(), op, obj_a, tr, va, out=tmp_path / "a", **common)
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), op, make_obj(), tr, va, out=tmp_path / "b", callbacks=[Interrupt(2)], **common)
    assert read_checkpoint(tmp_path / "b" / "last.pt")["step"] == 2  # mid-epoch
    resumed = fit(make_model(), op, obj_b, tr, va, out=tmp_path / "b", resume=True, **common)
    if kind.startswith("ct-minmax"):  # the adversary (direction u, network h, its optimiser) resumes exactly too
        ga, gb = obj_a.adversary.state_dict(), obj_b.adversary.state_dict()
        assert ga.keys() == gb.keys()
        for k in ga:
            assert torch.equal(ga[k], gb[k]), k
        fresh = MinMax(eps=0.05, channels=4, mode=mode, seed=1)
        fresh.setup(make_model(), op)
        assert any(not torch.equal(v, fresh.adversary.state_dict()[k]) for k, v in ga.items())  # G did move
        if mode == "memory":  # every training sample's direction resumes exactly
            ma, mb = obj_a.adversary.memory, obj_b.adversary.memory
            assert sorted(ma) == sorted(mb) == list(range(len(tr)))
            for i in ma:
                assert torch.equal(ma[i], mb[i]), i
    assert resumed.steps == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line) for line in (tmp_path / "b" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log] == [h["loss"] for h in straight.history]


def test_resume_refuses_a_different_run(ct, tmp_path):
    op, tr, _ = ct
    fit(FBPConvNet(op, 4, 1, seed=0), op, "plain", tr, max_steps=1, batch_size=4, out=tmp_path, progress=False)
    with pytest.raises(CtrobustError, match="different run.*objective"):
        fit(FBPConvNet(op, 4, 1, seed=0), op, "jitter", tr, max_steps=2, batch_size=4, out=tmp_path, resume=True,
            progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(ct, tmp_path):
    op, tr, _ = ct
    model = FBPConvNet(op, channels=4, depth=1, seed=0)

    def poison(step, logs):
        if step == 2:
            with torch.no_grad():
                model.unet.head.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"became nan at step 3.*last\.pt \(step 2\)"):
        fit(model, op, "plain", tr, max_steps=6, batch_size=4, save_every=1, out=tmp_path, progress=False,
            callbacks=[poison])
    good = read_checkpoint(tmp_path / "last.pt")
    assert good["step"] == 2
    assert all(torch.isfinite(v).all() for v in good["model"]["state"].values() if v.is_floating_point())
    load_checkpoint(tmp_path / "last.pt")


def test_cli_refuses_non_empty_out(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and not (out / "last.pt").exists()


def test_cli_train_max_steps_counts_steps_before_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--objective", "minmax", "--max-steps", "2", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and "val_ssim" in summary["metrics"]
    assert main(["train", *TINY, "--objective", "minmax", "--max-steps", "3", "--out", str(out), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert main(["train", *TINY, "--objective", "minmax", "--max-steps", "3", "--out", str(out), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3  # nothing left to do
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["train_config"]["angles"] == 12 and config["operator"]["type"] == "RadonTransform"
    model = load_checkpoint(out / "last.pt")
    assert model.operator.geometry == ParallelBeam2D(32, 12)
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(out), "--force"]) == 0
    assert [json.loads(r)["step"] for r in (out / "steps.jsonl").read_text().splitlines()] == [1]


def test_cli_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "1", "--max-steps", "2"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["train", "--angles", "0"])
    assert "positive integer" in capsys.readouterr().err
    assert main(["train", *TINY, "--out", str(tmp_path / "x"), "--resume", "--force"]) == 1


def test_train_on_a_prepared_file(tmp_path):
    from ctrobust.data import make_phantoms

    h5 = tmp_path / "ph.h5"
    make_phantoms(h5, n=10, size=24, seed=0, val_fraction=0.2, test_fraction=0.1, progress=False)
    config = TrainSpec(angles=10, data=str(h5), channels=4, depth=1, batch_size=3, max_steps=2,
                         out=str(tmp_path / "run"), progress=False)
    result = run_train(config)
    assert result.steps == 2 and result.metrics["val_psnr"] > 0
    assert read_checkpoint(result.last_checkpoint)["geometry"]["image_size"] == 24
    with pytest.raises(CtrobustError, match="differs from the data's image size"):
        run_train(TrainSpec(angles=10, data=str(h5), size=32, out=str(tmp_path / "run2"), progress=False))


def test_train_on_a_file_without_validation_patients(tmp_path):
    """A small prepared file whose val split is empty trains (without validation) instead of failing."""
    import h5py
    import numpy as np

    from ctrobust.cli import main
    from ctrobust.data.store import SliceWriter, atomic_output

    path = tmp_path / "small.h5"
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        w = SliceWriter(f, 32)
        w.append("train", np.random.default_rng(0).random((4, 32, 32), dtype=np.float32), ["p1"] * 4, "s1")
        w.finish({"source": "test", "window": "full"})
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--angles", "10", "--max-steps", "2", "--batch-size", "2",
                 "--channels", "4", "--depth", "1", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
