"""Bad input (issue 12): malformed DICOM, odd files and folders, bad prepared files, interrupts, checkpoints.

Every input is tiny and made here. Each test asserts what a user sees: the run completes or stops with a
clear message, nothing half-written stays behind, nothing unsafe is loaded.
"""

import base64
import json
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np
import pytest
import torch

from ctrobust.cli import main
from ctrobust.data import dicom as dcm
from ctrobust.data.prepare import collect_files, format_summary, log_path_for, prepare_dicom
from ctrobust.data.store import FORMAT, DataValidationError, SliceWriter, atomic_output, open_dataset
from ctrobust.errors import CtrobustError

from dicom_factory import write_ct

N = 16
FULL = dcm.WINDOWS["full"]

# Each malformed header value of the issue, as raw element bytes (pydicom refuses to encode most of them).
MALFORMED = {
    "spacing-one-value": ({"PixelSpacing": b"0.7"}, "PixelSpacing"),
    "position-not-numeric": ({"ImagePositionPatient": b"a\\b\\c"}, "ImagePositionPatient"),
    "orientation-not-numeric": ({"ImageOrientationPatient": b"x\\0\\0\\0\\1\\0"}, "ImageOrientationPatient"),
    "samples-per-pixel-two-values": ({"SamplesPerPixel": np.array([1, 1], "<u2").tobytes()}, "SamplesPerPixel"),
    "slope-nan": ({"RescaleSlope": b"NaN"}, "RescaleSlope"),
    "slope-inf": ({"RescaleSlope": b"inf"}, "RescaleSlope"),
    "intercept-nan": ({"RescaleIntercept": b"NaN"}, "RescaleIntercept"),
    "spacing-zero": ({"PixelSpacing": b"0\\0.7"}, "PixelSpacing"),
}


def ramp(offset=0, n=24):
    return (np.arange(n * n).reshape(n, n) * 5 + offset).astype(np.int16)


def _dead_pid() -> int:
    """The PID of a process that has ended (a killed writer)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob("*") if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------ DICOM headers

@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_header_value_is_skipped_with_its_reason(tmp_path, kind):
    raw, element = MALFORMED[kind]
    path = tmp_path / kind
    write_ct(path, ramp(), raw=raw)
    res = dcm.read_ct_file(str(path), FULL, N)  # never raises
    assert res.skip == "bad-header", (res.skip, res.detail)
    assert element in res.detail and not res.frames
    assert res.skip in dcm.SKIP_REASONS


@pytest.mark.parametrize("how", ["missing", "not-a-number"])
def test_missing_or_non_numeric_rescale_is_identity_with_a_warning(tmp_path, how):
    path = tmp_path / how
    if how == "missing":
        write_ct(path, ramp(), slope=None, intercept=None)
    else:
        write_ct(path, ramp(), raw={"RescaleSlope": b"abc", "RescaleIntercept": b"x1"})
    res = dcm.read_ct_file(str(path), FULL, N)
    assert res.skip is None and len(res.frames) == 1
    assert dcm.WARN_NO_SLOPE in res.warnings and dcm.WARN_NO_INTERCEPT in res.warnings
    # identity: stored value = HU; the ramp starts at 0 HU -> (0 + 1024) / 4095 in the full window
    ref = dcm.read_ct_file(str(_write(tmp_path / "ref", slope=1.0, intercept=0.0)), FULL, N)
    np.testing.assert_array_equal(res.frames[0].image, ref.frames[0].image)


def _write(path, **kw):
    write_ct(path, ramp(), **kw)
    return path


def test_a_fifo_is_skipped_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("res", dcm.read_ct_file(str(fifo), FULL, N)), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "read_ct_file blocked on a FIFO"
    assert box["res"].skip == "not-regular" and "FIFO" in box["res"].detail
    problems = []
    assert collect_files([tmp_path], problems=problems) == []
    assert problems == [{"path": str(fifo), "reason": "not-regular", "detail": "a FIFO, not a regular file"}]


# ------------------------------------------------------------------------------------------ the mixed tree

@pytest.fixture
def mixed_tree(tmp_path, monkeypatch):
    """Good CT of three patients, every malformed header, non-DICOM files, a FIFO, an unreadable folder."""
    root = tmp_path / "in"
    good = 0
    for p in range(3):
        for k in range(2):
            write_ct(root / f"patient{p}" / f"ct{k}.dcm", ramp(40 * p + k), patient_id=f"PID-{p}", z=float(k))
            good += 1
    bad = {}
    for kind, (raw, element) in MALFORMED.items():
        path = root / "odd" / f"{kind}.dcm"
        write_ct(path, ramp(), patient_id="PID-ODD", raw=raw)
        bad[str(path)] = ("bad-header", element)
    warned = root / "warned" / "no_rescale.dcm"
    write_ct(warned, ramp(), patient_id="PID-W", slope=None, intercept=None)
    (root / "notes.txt").write_text("patient list\n")
    (root / "empty.dcm").write_bytes(b"")
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    bad[str(root / "notes.txt")] = ("not-dicom", "")
    bad[str(root / "empty.dcm")] = ("not-dicom", "")
    bad[str(root / "picture.png")] = ("not-dicom", "")
    os.mkfifo(root / "pipe")
    bad[str(root / "pipe")] = ("not-regular", "FIFO")
    locked = root / "locked"
    write_ct(locked / "hidden.dcm", ramp(), patient_id="PID-LOCKED")
    if os.geteuid() != 0:
        locked.chmod(0)
        yield_cleanup = lambda: locked.chmod(0o755)  # noqa: E731
    else:  # root reads every folder: make this one fail to list the way a permission problem does
        real = os.scandir

        def scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
        yield_cleanup = lambda: None  # noqa: E731
    yield {"root": root, "good": good + 1, "bad": bad, "locked": locked}
    yield_cleanup()


def _check_mixed_run(tree, report, out, summary_text):
    skipped = {s["path"]: s for s in report["skipped"]}
    for path, (reason, word) in tree["bad"].items():
        assert path in skipped, f"{path} not named in the log"
        assert skipped[path]["reason"] == reason and word in skipped[path]["detail"], skipped[path]
    assert report["slices_kept"] == tree["good"]  # 6 good slices + the one with a warning
    assert [f["path"] for f in report["unreadable_folders"]] == [str(tree["locked"])]
    assert str(tree["locked"]) in summary_text and "bad-header" in summary_text
    for path, (reason, word) in tree["bad"].items():
        if reason in ("bad-header", "not-regular"):  # damaged input is named in the summary too
            assert f"{path}: " in summary_text and word in summary_text
    assert f"warning: {dcm.WARN_NO_SLOPE} (1 file(s))" in summary_text
    log = json.loads(log_path_for(out).read_text())
    assert log["unreadable_folders"] == report["unreadable_folders"]
    assert {s["path"] for s in log["skipped"]} == set(tree["bad"])
    with h5py.File(out, "r") as f:
        images = np.concatenate([f[s]["images"][:] for s in ("train", "val", "test")])
    assert images.shape == (tree["good"], N, N)
    assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0


def test_mixed_tree_completes_and_names_every_bad_file(mixed_tree, tmp_path):
    out = tmp_path / "ct.h5"
    report = prepare_dicom(mixed_tree["root"], out, size=N, progress=False)
    _check_mixed_run(mixed_tree, report, out, format_summary(report))


def test_mixed_tree_with_two_workers_through_the_cli(mixed_tree, tmp_path, capsys):
    out = tmp_path / "ct.h5"
    assert main(["prepare-dicom", str(mixed_tree["root"]), "--out", str(out), "--size", str(N), "--workers", "2",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(log_path_for(out).read_text())
    _check_mixed_run(mixed_tree, report, out, printed)


# ------------------------------------------------------------------------------------------ interrupts, temporaries

@pytest.fixture
def small_tree(tmp_path):
    root = tmp_path / "in"
    for p in range(3):
        for k in range(2):
            write_ct(root / f"p{p}" / f"{k}.dcm", ramp(p + k), patient_id=f"PID-{p}", z=float(k))
    return root


@pytest.mark.parametrize("phase", ["reading", "writing"])
def test_sigterm_during_prepare_leaves_no_temporary_file(small_tree, tmp_path, monkeypatch, capsys, phase):
    out = tmp_path / "out" / "ct.h5"
    out.parent.mkdir()
    import ctrobust.data.prepare as prep

    calls = {"n": 0}
    if phase == "reading":
        real = prep.read_ct_file

        def read(*a, **k):
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*a, **k)

        monkeypatch.setattr(prep, "read_ct_file", read)
    else:
        real = SliceWriter.append

        def append(self, *a, **k):
            real(self, *a, **k)
            os.kill(os.getpid(), signal.SIGTERM)  # the output's temporary file exists now

        monkeypatch.setattr(SliceWriter, "append", append)
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["prepare-dicom", str(small_tree), "--out", str(out), "--size", str(N), "--no-progress"])
    assert rc == 143 and "terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # main restores the handler it replaced
    assert not out.exists() and _temporaries(out.parent) == []


def test_stale_temporaries_of_killed_runs_are_removed_at_the_next_run(small_tree, tmp_path):
    out = tmp_path / "ct.h5"
    dead, alive = _dead_pid(), os.getpid()
    stale = [tmp_path / f".ct.h5.{dead}.k2j4f9aa.scratch.tmp", tmp_path / f".ct.h5.{dead}.x81mzq0b.tmp",
             tmp_path / f".ct.log.json.{dead}.abcdefgh.tmp"]
    live = tmp_path / f".ct.h5.{alive}.inuse000.tmp"  # another run writing the same output right now
    other = tmp_path / f".other.h5.{dead}.aaaaaaaa.tmp"  # not ours to remove
    for p in stale + [live, other]:
        p.write_bytes(b"half-written")
    prepare_dicom(small_tree, out, size=N, progress=False)
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()


def test_stale_checkpoint_temporary_is_removed_at_the_next_save(tmp_path):
    from ctrobust.training.checkpoint import save_checkpoint

    stale = tmp_path / f".last.pt.{_dead_pid()}.tmp"
    stale.write_bytes(b"half")
    save_checkpoint(tmp_path / "last.pt", {"model": {}, "operator": {}})
    assert not stale.exists() and (tmp_path / "last.pt").is_file()


class SignalInStep:
    """A plain objective whose loss sends ``signals`` (one per entry) while step ``at`` runs."""

    def __init__(self, at, signals):
        from ctrobust.training.objectives import build_objective

        self.objective = build_objective("plain")
        real = self.objective.loss
        calls = {"n": 0}

        def loss(*a, **k):
            calls["n"] += 1
            if calls["n"] == at:
                for sig in signals:
                    signal.raise_signal(sig)
            return real(*a, **k)

        self.objective.loss = loss


@pytest.fixture(scope="module")
def cs_data():
    from ctrobust.operators.cs import GaussianCS

    op = GaussianCS(10, (4, 4), seed=3)
    data = torch.utils.data.TensorDataset(torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    return op, data


def _fit(op, data, objective, out, **kw):
    from ctrobust.models import LinearReconstruction
    from ctrobust.training import fit

    return fit(LinearReconstruction(10, 16), op, objective, data, max_steps=6, batch_size=4, lr=1e-2, out=out,
               progress=False, **kw)


@pytest.fixture
def ctrl_c_enabled():
    """Python's own SIGINT handler for the test: a process started in the background by a non-interactive
    shell inherits SIGINT ignored, and the trainer (rightly) leaves an ignored signal ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_inside_a_step_saves_that_step_and_says_so(cs_data, tmp_path, capsys, ctrl_c_enabled):
    from ctrobust.training import read_checkpoint

    op, data = cs_data
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        _fit(op, data, SignalInStep(3, [signal.SIGINT]).objective, tmp_path / "run")
    assert signal.getsignal(signal.SIGINT) is before
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 3  # the step in progress finished and was saved
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run' / 'last.pt'} holds step 3" in err and "--resume" in err
    assert _temporaries(tmp_path / "run") == []
    # the saved state is exact: resuming gives the uninterrupted run
    resumed = _fit(op, data, "plain", tmp_path / "run", resume=True)
    straight = _fit(op, data, "plain", tmp_path / "straight")
    assert resumed.steps == 6 and torch.equal(resumed.model.B, straight.model.B)


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_saved_step(cs_data, tmp_path, capsys, ctrl_c_enabled):
    from ctrobust.training import read_checkpoint

    op, data = cs_data
    with pytest.raises(KeyboardInterrupt):
        _fit(op, data, SignalInStep(4, [signal.SIGINT, signal.SIGINT]).objective, tmp_path / "run", save_every=2)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    err = capsys.readouterr().err
    assert "step 4 was in progress and is lost" in err and "holds step 2" in err and "steps 3-3 are not in it" in err


def test_sigterm_during_train_saves_last_pt_and_exits_143(tmp_path, monkeypatch, capsys):
    from ctrobust.training import objectives, read_checkpoint

    real = objectives.Plain.loss
    calls = {"n": 0}

    def loss(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *a, **k)

    monkeypatch.setattr(objectives.Plain, "loss", loss)
    out = tmp_path / "run"
    rc = main(["train", "--angles", "8", "--size", "16", "--channels", "2", "--depth", "1", "--n-train", "8",
               "--n-val", "2", "--batch-size", "2", "--max-steps", "10", "--out", str(out), "--device", "cpu",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 143 and "terminated (SIGTERM)" in err and "holds step 2" in err
    assert read_checkpoint(out / "last.pt")["step"] == 2 and _temporaries(out) == []


# ------------------------------------------------------------------------------------------ prepared HDF5 files

def _prepared(path, train_images, val_images=None, image_size=None):
    """A file with the prepared-slice layout holding exactly the given arrays (no casting, no checks)."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = 1
        f.attrs["image_size"] = image_size if image_size is not None else train_images.shape[1]
        for split, images in (("train", train_images), ("val", val_images), ("test", None)):
            g = f.create_group(split)
            images = np.zeros((0, *train_images.shape[1:]), train_images.dtype) if images is None else images
            g.create_dataset("images", data=images)
            g.create_dataset("patient", data=np.array([b"p%d" % (i // 2) for i in range(len(images))], dtype="S16"))
    return path


def _good(n=4, size=16):
    return np.random.default_rng(0).random((n, size, size), dtype=np.float32)


@pytest.mark.parametrize("kind", ["uint8", "int16-hu", "scaled-x1000", "nan", "val-other-size"])
def test_bad_prepared_file_is_refused_at_open(tmp_path, kind):
    good = _good()
    if kind == "uint8":
        train, where, problem = (good * 255).astype(np.uint8), "/train/images", "dtype uint8"
    elif kind == "int16-hu":
        train, where, problem = (good * 4095 - 1024).astype(np.int16), "/train/images", "dtype int16"
    elif kind == "scaled-x1000":
        train, where, problem = good * 1000, "/train/images", "outside [0, 1]"
    elif kind == "nan":
        train = good.copy()
        train[3, 5, 5] = np.nan
        where, problem = "/train/images[3]", "NaN"
    path = tmp_path / f"{kind}.h5"
    if kind == "val-other-size":
        _prepared(path, good, _good(2, 12))
        with pytest.raises(DataValidationError, match=r"/val/images holds 12 x 12 slices.*image_size is 16"):
            open_dataset(path, "val")
        with pytest.raises(DataValidationError, match=r"/train/images holds 16 x 16 slices but /val/images holds 12"):
            open_dataset(path, "train")
        return
    _prepared(path, train)
    with pytest.raises(DataValidationError) as info:
        open_dataset(path, "train")
    assert str(path) in str(info.value) and where in str(info.value) and problem in str(info.value)


def test_nan_slice_outside_the_open_sample_is_refused_when_read(tmp_path):
    images = _good(100)
    images[37, 0, 0] = np.nan  # not among the 32 evenly spaced slices checked at open
    ds = open_dataset(_prepared(tmp_path / "late.h5", images), "train")
    assert ds[36].shape == (1, 16, 16)
    with pytest.raises(DataValidationError, match=r"/train/images\[37\] contains 1 NaN"):
        ds[37]


def test_train_refuses_a_bad_prepared_file_with_a_message(tmp_path, capsys):
    path = _prepared(tmp_path / "u8.h5", (_good() * 255).astype(np.uint8))
    rc = main(["train", "--data", str(path), "--angles", "8", "--max-steps", "1", "--batch-size", "2",
               "--channels", "2", "--depth", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "/train/images has dtype uint8" in err and "Traceback" not in err


def test_file_modes_of_prepared_data_and_log(small_tree, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "ct.h5"
        prepare_dicom(small_tree, out, size=N, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # shareable: an ordinary file's mode
    assert stat.S_IMODE(log_path_for(out).stat().st_mode) == 0o600  # names input paths: owner only


# ------------------------------------------------------------------------------------------ checkpoints

@pytest.fixture(scope="module")
def ct_checkpoint(tmp_path_factory):
    from ctrobust.data import load_split
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.models import FBPConvNet
    from ctrobust.operators.radon import RadonTransform
    from ctrobust.training import fit

    op = RadonTransform(ParallelBeam2D(16, 8))
    out = tmp_path_factory.mktemp("ckpt")
    fit(FBPConvNet(op, 2, 1, seed=0), op, "plain", load_split(None, "train", size=16, n_phantoms=4), max_steps=1,
        batch_size=2, out=out, progress=False)
    return out / "last.pt", op


@pytest.mark.parametrize("change", [{"n_angles": 10}, {"n_detectors": 25}, {"angle_range": np.pi / 2}])
def test_load_checkpoint_refuses_an_operator_of_another_geometry(ct_checkpoint, change):
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.operators.radon import RadonTransform
    from ctrobust.training import load_checkpoint

    path, op = ct_checkpoint
    assert load_checkpoint(path, operator=RadonTransform(ParallelBeam2D(16, 8))).operator.geometry == op.geometry
    fields = {k: v for k, v in op.geometry.to_config().items() if k != "type"}
    other = RadonTransform(ParallelBeam2D(**{**fields, **change}))
    with pytest.raises(CtrobustError, match="does not match checkpoint.*geometry"):
        load_checkpoint(path, operator=other)


def test_load_checkpoint_refuses_a_cs_operator_with_another_seed(tmp_path):
    from ctrobust.models import LinearReconstruction
    from ctrobust.operators.cs import GaussianCS
    from ctrobust.training import fit, load_checkpoint

    op = GaussianCS(10, (4, 4), seed=3)
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    fit(LinearReconstruction(10, 16), op, "plain", data, max_steps=1, batch_size=4, out=tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "last.pt", operator=GaussianCS(10, (4, 4), seed=3)) is not None
    with pytest.raises(CtrobustError, match=r"seed 4 \(checkpoint: 3\)"):
        load_checkpoint(tmp_path / "last.pt", operator=GaussianCS(10, (4, 4), seed=4))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-must-never-run",))


@pytest.mark.parametrize("kind", ["pickle-global", "torch-module", "random-bytes"])
def test_unsafe_or_random_pt_is_refused_without_suggesting_an_unsafe_load(tmp_path, kind):
    from ctrobust.training import load_checkpoint

    path = tmp_path / f"{kind}.pt"
    if kind == "pickle-global":
        path.write_bytes(pickle.dumps({"format": "ctrobust-checkpoint", "x": _RunsCode()}, protocol=2))
    elif kind == "torch-module":
        torch.save({"format": "ctrobust-checkpoint", "model": torch.nn.Linear(2, 2)}, path)
    else:
        path.write_bytes(np.random.default_rng(1).bytes(400))
    with pytest.raises(CtrobustError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "not loaded" in msg
    assert "weights_only" not in msg and "False" not in msg and "will likely succeed" not in msg
    if kind != "random-bytes":
        assert "disallowed objects" in msg


# ------------------------------------------------------------------------------------------ small validations

@pytest.mark.parametrize("argv, words", [
    (["train", "--size", "6"], "at least 8"),
    (["train", "--size", "1"], "at least 8"),
    (["train", "--data-seed", "-1"], ">= 0"),
    (["prepare-dicom", "x", "--out", "y.h5", "--seed", "-1"], ">= 0"),
    (["prepare-dicom", "x", "--out", "y.h5", "--size", "4"], "at least 8"),
    (["prepare-dicom", "x", "--out", "y.h5", "--workers", "0"], "positive integer"),
])
def test_small_option_values_are_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_prepare_dicom_refuses_a_negative_seed_in_python(small_tree, tmp_path):
    with pytest.raises(CtrobustError, match="seed must be an integer >= 0"):
        prepare_dicom(small_tree, tmp_path / "o.h5", seed=-1, progress=False)


def test_ctrl_c_during_start_up_is_a_clean_exit(monkeypatch, capsys):
    import ctrobust.cli as cli

    def slow_imports():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", slow_imports)
    assert main(["train"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "ctrobust: interrupted"


def test_burned_in_text_is_mentioned_in_help_closing_line_and_docs(small_tree, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["prepare-dicom", "--help"])
    assert "burned into the pixels is NOT removed" in " ".join(capsys.readouterr().out.split())
    assert main(["prepare-dicom", str(small_tree), "--out", str(tmp_path / "o.h5"), "--size", str(N),
                 "--no-progress"]) == 0
    assert "burned-in pixel text is not removed" in capsys.readouterr().out
    docs = Path(__file__).resolve().parents[1] / "docs"
    assert "burned-in" in (docs / "cli" / "prepare-dicom.md").read_text().lower()


# ------------------------------------------------------------------------------------------ report

def _result_folder(path, command="evaluate"):
    from ctrobust.evaluation.report import write_json

    path.mkdir(parents=True)
    write_json({"command": command, "config": {"n": 1}, "summary": [{"model": "m", "mse_mean": 0.1}]},
               path / "summary.json")
    return path


def _png(path, colour):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.imshow(np.full((2, 2, 3), colour))
    fig.savefig(path)
    plt.close(fig)
    return path


def test_markdown_links_are_escaped_for_spaces_and_non_ascii(tmp_path):
    from ctrobust.evaluation.report import build_report

    folder = _result_folder(tmp_path / "résultats 1 [final]")
    _png(folder / "curve (eps).png", 0.5)
    out = tmp_path / "report.md"
    build_report([folder], out)
    text = out.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)  # a link target has no space and no ')'
    assert len(links) == 1 and all(ord(c) < 128 for c in links[0])
    assert (out.parent / unquote(links[0])).resolve() == (folder / "curve (eps).png").resolve()


def test_only_regular_png_files_are_embedded(tmp_path):
    from ctrobust.evaluation.report import build_report

    folder = _result_folder(tmp_path / "res")
    _png(folder / "real.png", 0.2)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n private key material")
    (folder / "link.png").symlink_to(secret)
    (folder / "fake.png").write_bytes(b"not a png at all")
    html_out = tmp_path / "r.html"
    build_report([folder], html_out)
    page = html_out.read_text()
    assert page.count("<img") == 1 and base64.b64encode((folder / "real.png").read_bytes()).decode() in page
    assert base64.b64encode(secret.read_bytes()).decode()[:24] not in page
    md_out = tmp_path / "r.md"
    build_report([folder], md_out)
    md = md_out.read_text()
    assert "real.png" in md and "link.png" not in md and "fake.png" not in md
