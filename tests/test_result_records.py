"""Every result says what was measured: summary.json of attack and evaluate carries the geometry, backend,
projector, noise and dose, the model's config; every CSV is named in it with its columns; the report prints
the geometry; a geometry flag that disagrees with the checkpoint is refused with the checkpoint's value."""

import csv
import json
import math

import pytest

from ctrobust.app.results import acquisition_record, acquisition_text
from ctrobust.cli import main
from ctrobust.operators.cs import GaussianCS
from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D
from ctrobust.operators.noise import LogPoissonNoise
from ctrobust.operators.radon import RadonTransform

SMALL = ["--n-samples", "2", "--batch-size", "2", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """best.pt of a tiny FBPConvNet at 24 px and 10 parallel views, 1 step."""
    from ctrobust.app import TrainSpec, run_train

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    return run_train(TrainSpec(angles=10, size=24, n_train=4, n_val=2, max_steps=1, batch_size=2, channels=4, depth=1,
                               out=str(out), progress=False, device="cpu")).best_checkpoint


def _csv_header(path):
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


def _check_record(summary, folder, photons=None):
    acq = summary["config"]["acquisition"]
    assert acq["operator"] == "RadonTransform"
    assert acq["geometry"] == {"type": "ParallelBeam2D", "image_size": 24, "n_angles": 10, "n_detectors": 34,
                               "angle_range": math.pi}
    assert acq["backend"] in ("astra", "odl") and "projector" in acq
    assert acq["noise"] == ({"model": "none"} if photons is None else
                            {"model": "LogPoissonNoise", "photons": photons, "mu": pytest.approx(21.153 / 24, rel=1e-3),
                             "read_noise": 0.0})
    assert "parallel beam, 24 x 24 px, 10 views on [0, 180 deg), 34 detector bins" in summary["config"]["geometry"]
    ckpt = summary["models"][0]
    assert ckpt["kind"] == "checkpoint" and ckpt["info"]["model"]["config"]["type"].lower() == "fbpconvnet"
    assert ckpt["acquisition"] == acq
    tables = summary["tables"]
    assert "summary.csv" in tables and "samples.csv" in tables
    for name, table in tables.items():
        assert _csv_header(folder / name) == table["columns"], name
        with open(folder / name, newline="") as fh:
            assert sum(1 for _ in fh) - 1 == table["rows"]


def test_attack_summary_says_what_was_measured(checkpoint, tmp_path):
    out = tmp_path / "a"
    assert main(["attack", "--checkpoint", str(checkpoint), "--eps-grid", "0,0.02", "--steps", "2", "--out", str(out),
                 *SMALL]) == 0
    summary = json.loads((out / "summary.json").read_text())
    _check_record(summary, out)
    assert summary["config"]["steps"] == 2 and summary["config"]["restarts"] >= 1  # attack settings stay


def test_noise_and_dose_are_recorded(checkpoint, tmp_path):
    out = tmp_path / "a"
    assert main(["attack", "--checkpoint", str(checkpoint), "--eps-grid", "0", "--steps", "1", "--photons", "5000",
                 "--out", str(out), *SMALL]) == 0
    summary = json.loads((out / "summary.json").read_text())
    _check_record(summary, out, photons=5000.0)
    assert "LogPoissonNoise I0 = 5000 photons" in summary["config"]["geometry"]


def test_evaluate_summary_says_what_was_measured_and_the_report_shows_it(checkpoint, tmp_path):
    out = tmp_path / "e"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), *SMALL]) == 0
    summary = json.loads((out / "summary.json").read_text())
    _check_record(summary, out)
    report = tmp_path / "r.md"
    assert main(["report", str(out), "--out", str(report)]) == 0
    assert "geometry = parallel beam, 24 x 24 px, 10 views" in report.read_text()


@pytest.mark.parametrize("flags, shown", [
    (["--angles", "143"], "10 views"),
    (["--geometry", "fan"], "parallel"),
    (["--size", "32"], "24 px"),
    (["--geometry", "fan", "--source-origin", "80"], "parallel"),
])
def test_a_flag_that_disagrees_with_the_checkpoint_is_refused(checkpoint, tmp_path, capsys, flags, shown):
    out = tmp_path / "a"
    rc = main(["attack", "--checkpoint", str(checkpoint), "--eps-grid", "0", "--steps", "1", "--out", str(out),
               *flags, *SMALL])
    err = capsys.readouterr().err
    assert rc == 1
    assert flags[0] in err and shown in err and "drop" in err
    assert not out.exists()  # refused before anything was written


def test_a_flag_that_agrees_is_accepted(checkpoint, tmp_path):
    out = tmp_path / "a"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--angles", "10", "--geometry", "parallel", "--size", "24",
                 "--out", str(out), *SMALL]) == 0


def test_without_a_checkpoint_the_flags_build_the_geometry(tmp_path):
    out = tmp_path / "a"
    assert main(["evaluate", "--method", "fbp", "--size", "16", "--angles", "7", "--geometry", "fan", "--out", str(out),
                 *SMALL]) == 0
    acq = json.loads((out / "summary.json").read_text())["config"]["acquisition"]
    assert acq["geometry"]["type"] == "FanBeam2D" and acq["geometry"]["n_angles"] == 7
    assert acq["geometry"]["source_origin"] == pytest.approx(2 * math.sqrt(2) * 16)


def test_record_and_text_of_fan_beam_and_cs():
    fan = RadonTransform(FanBeam2D(16, 8, source_origin=50.0))
    rec = acquisition_record(fan, LogPoissonNoise(4096, image_size=16))
    assert rec["geometry"]["source_origin"] == 50.0 and rec["geometry"]["angle_range"] == pytest.approx(2 * math.pi)
    assert rec["noise"]["photons"] == 4096.0
    text = acquisition_text(rec)
    assert text.startswith("fan beam, 16 x 16 px, 8 views on [0, 360 deg), 24 detector bins, source-axis 50 px")
    assert "I0 = 4096 photons" in text
    cs = acquisition_record(GaussianCS(10, (4, 4), seed=3))
    assert cs["operator_config"] == {"type": "GaussianCS", "m": 10, "image_shape": [4, 4], "seed": 3}
    assert "geometry" not in cs and acquisition_text(cs).endswith("noise-free")
    par = acquisition_record(RadonTransform(ParallelBeam2D(16, 5)))
    assert json.loads(json.dumps(par)) == par
