"""Issue 7 on the command line: method options for attack (TV, DIP), evaluate --shift with test-time
training, and evaluate --small-features. Tiny problems (24-32 px, <= 8 views, a few iterations)."""

import csv
import inspect
import json
import math
import warnings

import pytest
import torch

from ctrobust.cli import main

warnings.filterwarnings("ignore", message="Sparse")

PNG = b"\x89PNG\r\n\x1a\n"


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """best.pt of a tiny FBPConvNet (32 px, 8 views, 4 channels) trained for 2 steps by `ctrobust train`."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["train", "--angles", "8", "--size", "32", "--n-train", "4", "--n-val", "2", "--max-steps", "2",
                 "--batch-size", "2", "--channels", "4", "--depth", "2", "--out", str(out), "--no-progress"]) == 0
    return out / "best.pt"


# -- attack --method tv|dip with options --------------------------------------------------------------


def test_attack_tv_and_dip_with_options_write_the_promised_files(tmp_path):
    from ctrobust import ParallelBeam2D, RadonTransform
    from ctrobust.reconstruction.classical import tv_reconstruction
    from ctrobust.data import load_split
    from ctrobust.evaluation.metrics import all_metrics

    out = tmp_path / "res"
    rc = main(["attack", "--method", "tv", "--tv-iterations", "5", "--tv-tau", "0.1",
               "--method", "dip", "--dip-iterations", "5", "--dip-channels", "4", "--dip-depth", "1",
               "--dip-patience", "2", "--method-option", "dip.seed=3",
               "--image-size", "24", "--n-angles", "8", "--n-samples", "1", "--batch-size", "1",
               "--eps-grid", "0,0.02", "--steps", "1", "--out", str(out)])
    assert rc == 0
    for png in ("robustness_curve.png", "gallery.png"):
        assert (out / png).read_bytes()[:8] == PNG
    summary = json.loads((out / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["tv", "dip", "FBP"]  # one curve, FBP as reference
    opts = summary["config"]["method_options"]
    assert opts["tv"] == {"tau": 0.1, "iterations": 5, "nonneg": True}  # library default filled in
    assert opts["dip"]["iterations"] == 5 and opts["dip"]["seed"] == 3 and opts["dip"]["lr"] == 0.01
    rows = read_csv(out / "samples.csv")
    assert len(rows) == 3 * 2 * 1 * 3  # models x eps x samples x (clean, random, attack)
    for r in rows:
        if r["condition"] == "attack":
            assert float(r["perturbation_norm"]) <= float(r["radius"]) * (1 + 1e-5)
    # the options reached the solver: the clean TV row is tv_reconstruction(op, y, tau=0.1, 5 iterations)
    x = load_split(None, "test", size=24)[0][None]
    op = RadonTransform(ParallelBeam2D(24, 8))
    with torch.no_grad():
        expected = float(all_metrics(tv_reconstruction(op, op(x), 0.1, 5), x)["mse"][0])
        other_tau = float(all_metrics(tv_reconstruction(op, op(x), 3.0, 5), x)["mse"][0])
    got = [float(r["mse"]) for r in rows if r["model"] == "tv" and r["condition"] == "clean"]
    assert got[0] == pytest.approx(expected, rel=1e-4) and not got[0] == pytest.approx(other_tau, rel=1e-3)


@pytest.mark.parametrize("argv, fragment", [
    (["--method", "tv", "--method-option", "tv.iterations=abc"], "expected an integer"),
    (["--method", "tv", "--method-option", "tv.foo=1"], "no option 'foo'"),
    (["--method", "tv", "--method-option", "tvtau"], "NAME.KEY=VALUE"),
    (["--method", "fbp", "--dip-iterations", "3"], "add --method dip"),
    (["--method", "dip", "--method-option", "dip.holdout=2"], "holdout"),
    (["--method", "tv", "--tv-iterations", "5", "--method-option", "tv.iterations=6"], "contradicts"),
    (["--method", "nope/best.pt"], "does not exist"),
])
def test_bad_method_options_fail_clearly(tmp_path, capsys, argv, fragment):
    out = tmp_path / "o"
    assert main(["attack", *argv, "--image-size", "16", "--n-angles", "6", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "ctrobust attack: error:" in err and fragment in err and "Traceback" not in err
    assert not out.exists()


def test_bad_method_option_values_are_usage_errors_and_help_shows_library_defaults(capsys):
    from ctrobust.reconstruction.classical import TVReconstruction, deep_image_prior

    with pytest.raises(SystemExit) as exc:
        main(["attack", "--method", "tv", "--tv-tau", "-1"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    tau = inspect.signature(TVReconstruction).parameters["tau"].default
    patience = inspect.signature(deep_image_prior).parameters["patience"].default
    assert f"(default: {tau})" in text.split("--tv-tau TAU")[-1].split("--tv-iterations", 1)[0]
    assert f"(default: {patience})" in text.split("--dip-patience PATIENCE")[-1].split("--method-option", 1)[0]


def test_method_given_a_checkpoint_path_loads_it(checkpoint, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", "--method", str(checkpoint), "--no-fbp", "--n-samples", "1", "--out", str(out)]) == 0
    assert "--checkpoint" in capsys.readouterr().err
    models = json.loads((out / "summary.json").read_text())["models"]
    assert [(m["label"], m["kind"], m["source"]) for m in models] == [("tiny", "checkpoint", str(checkpoint))]


# -- evaluate --shift ... --ttt -----------------------------------------------------------------------


@pytest.mark.parametrize("shift, extra, shifted_name", [
    ("views", ["--shift-angles", "4"], "views_4"),
    ("noise", ["--shift-noise", "0.2"], "noise_0.2"),
])
def test_evaluate_shift_with_ttt_reports_gap_closed(checkpoint, tmp_path, shift, extra, shifted_name):
    clean = tmp_path / "clean"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--no-fbp", "--n-samples", "2", "--out", str(clean)]) == 0
    clean_ssim = json.loads((clean / "summary.json").read_text())["summary"][0]["ssim_mean"]

    out = tmp_path / shift
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--shift", shift, *extra, "--ttt", "--ttt-steps", "2",
                 "--ttt-lr", "1e-3", "--n-samples", "2", "--batch-size", "2", "--out", str(out)]) == 0
    result = json.loads((out / "summary.json").read_text())
    assert result["config"]["shift"]["kind"] == shift and result["config"]["shift"]["ttt_options"]["steps"] == 2
    conditions = {(s["model"], s["condition"]) for s in result["summary"]}
    assert conditions == {("tiny", "in_distribution"), ("tiny", shifted_name), ("tiny", f"{shifted_name}+ttt"),
                          ("FBP", "in_distribution"), ("FBP", shifted_name)}  # FBP has no weights: no TTT
    by = {(s["model"], s["condition"]): s for s in result["summary"]}
    # in distribution without base noise is the plain clean evaluation
    assert by[("tiny", "in_distribution")]["ssim_mean"] == pytest.approx(clean_ssim, abs=1e-6)
    for model in ("tiny", "FBP"):
        assert by[(model, shifted_name)]["ssim_mean"] < by[(model, "in_distribution")]["ssim_mean"]

    rows = {r["model"]: r for r in read_csv(out / "shift.csv")}
    assert set(rows) == {"tiny", "FBP"} and rows["FBP"]["gap_closed"] == ""
    t = rows["tiny"]
    ssim_in, ssim_sh, ssim_ttt = (float(t[k]) for k in ("ssim_in_dist", "ssim_shifted", "ssim_ttt"))
    assert ssim_in == pytest.approx(by[("tiny", "in_distribution")]["ssim_mean"])
    assert ssim_ttt == pytest.approx(by[("tiny", f"{shifted_name}+ttt")]["ssim_mean"])
    assert float(t["ssim_gap"]) == pytest.approx(ssim_in - ssim_sh)
    # the report carries the shift table with the gap closed
    report = tmp_path / f"{shift}.md"
    assert main(["report", str(out), "--out", str(report)]) == 0
    text = report.read_text()
    assert "gap_closed" in text and "Distribution shift" in text
    gap_closed = float(t["gap_closed"])
    assert math.isfinite(gap_closed) and gap_closed == pytest.approx((ssim_ttt - ssim_sh) / (ssim_in - ssim_sh))
    assert result["shift"][0]["gap_closed"] == pytest.approx(gap_closed)
    samples = read_csv(out / "samples.csv")
    ttt_rows = [r for r in samples if r["condition"] == f"{shifted_name}+ttt"]
    assert len(samples) == 5 * 2 and len(ttt_rows) == 2
    assert all(0 <= int(float(r["ttt_steps"])) <= 2 for r in ttt_rows)


@pytest.mark.parametrize("argv, fragment", [
    (["--shift", "views"], "--shift-angles"),
    (["--shift", "noise"], "--shift-noise"),
    (["--shift-noise", "0.1"], "only applies to --shift noise"),
    (["--ttt"], "--ttt needs --shift"),
    (["--shift", "noise", "--shift-noise", "0.1", "--ttt-steps", "3"], "only apply with --ttt"),
    (["--shift", "views", "--shift-angles", "4", "--ttt"], "--checkpoint"),
    (["--shift", "data", "--shift-data", "missing.h5"], "cannot open --shift-data"),
    (["--feature-radius", "2"], "only apply with --small-features"),
    (["--small-features", "--n-features", "4", "--feature-radius", "4"], "no room"),
])
def test_evaluate_argument_errors(tmp_path, capsys, argv, fragment):
    out = tmp_path / "o"
    assert main(["evaluate", "--method", "fbp", "--image-size", "16", "--n-angles", "6", "--n-samples", "1",
                 *argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "ctrobust evaluate: error:" in err and fragment in err
    assert not out.exists()


# -- evaluate --small-features ------------------------------------------------------------------------


def test_small_features_output_parses(checkpoint, tmp_path, capsys):
    out = tmp_path / "feat"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--small-features", "--n-features", "1",
                 "--feature-radius", "1.5", "--feature-contrast", "0.3", "--eps", "0.02", "--feature-attack-steps", "2",
                 "--n-samples", "2", "--batch-size", "2", "--out", str(out)]) == 0
    assert "detected" in capsys.readouterr().out
    rows = read_csv(out / "features.csv")
    assert len(rows) == 2 * 2 * 2 * 1  # models x eps x samples x features
    assert {(r["model"], float(r["eps"]), r["condition"]) for r in rows} == {
        (m, e, c) for m in ("tiny", "FBP") for e, c in ((0.0, "clean"), (0.02, "attack"))}
    for r in rows:  # detected means at least half of the inserted contrast survives
        assert (r["detected"] == "True") == (float(r["contrast_ratio"]) >= 0.5)
    # the same disks for every model and eps
    assert len({(r["sample"], r["center_row"], r["center_col"]) for r in rows}) == 2
    result = json.loads((out / "summary.json").read_text())
    feats = result["features"]
    assert feats["config"]["radius"] == 1.5 and feats["config"]["eps"] == [0.0, 0.02]
    summary = read_csv(out / "features_summary.csv")
    assert len(summary) == len(feats["summary"]) == 4
    for s in feats["summary"]:
        sel = [r for r in rows if r["model"] == s["model"] and float(r["eps"]) == s["eps"]]
        assert s["n_detected"] == sum(r["detected"] == "True" for r in sel) and s["n_features"] == len(sel)
        assert s["detected_share"] == pytest.approx(s["n_detected"] / s["n_features"])
    report = tmp_path / "features.html"
    assert main(["report", str(out), "--out", str(report)]) == 0
    assert "Small features" in report.read_text() and "detected_share" in report.read_text()


def test_evaluate_data_shift_on_another_file(checkpoint, tmp_path, capsys):
    other = tmp_path / "other.h5"
    assert main(["make-phantoms", "--out", str(other), "--n", "8", "--size", "32", "--seed", "7",
                 "--test-fraction", "0.3", "--no-progress"]) == 0
    out = tmp_path / "data"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--no-fbp", "--shift", "data", "--shift-data", str(other),
                 "--n-samples", "2", "--out", str(out)]) == 0
    result = json.loads((out / "summary.json").read_text())
    assert [s["condition"] for s in result["summary"]] == ["in_distribution", "other_data"]
    assert result["config"]["shift"]["shift_data"] == str(other) and result["config"]["shift"]["shift_split"] == "test"
    row = read_csv(out / "shift.csv")[0]
    assert row["ttt_skipped"] == "no --ttt" and "gap_closed" not in row and "ssim_ttt" not in row
    assert float(row["ssim_gap"]) == pytest.approx(float(row["ssim_in_dist"]) - float(row["ssim_shifted"]))
    small = tmp_path / "small.h5"
    assert main(["make-phantoms", "--out", str(small), "--n", "8", "--size", "24", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--shift", "data", "--shift-data", str(small),
                 "--out", str(tmp_path / "bad")]) == 1
    assert "same size" in capsys.readouterr().err and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("flag", [["--tv-tau", "auto"], ["--method-option", "tv.tau=auto"]])
def test_tv_tau_auto_chooses_the_weight_on_validation_at_the_runs_noise(tmp_path, capsys, flag):
    from ctrobust import ParallelBeam2D, RadonTransform
    from ctrobust.app.inputs import choose_tv_weight, noise_model
    from ctrobust.app.specs import AttackSpec

    out = tmp_path / "res"
    argv = ["attack", "--method", "tv", *flag, "--tv-iterations", "20", "--photons", "3000", "--no-fbp",
            "--image-size", "24", "--n-angles", "8", "--n-samples", "1", "--eps-grid", "0,0.02", "--steps", "1",
            "--no-linearization", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert "TV weight tau = " in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    tau = summary["config"]["method_options"]["tv"]["tau"]
    tuning = summary["models"][0]["info"]["tuning"]
    assert isinstance(tau, float) and tau == tuning["tau"] and tuning["n_images"] == 16 and tuning["iterations"] == 20
    # the same choice by hand: the validation split measured with this run's noise (not noise-free, not the test split)
    op = RadonTransform(ParallelBeam2D(24, 8))
    spec = AttackSpec(photons=3000.0, seed=0)
    choice, _ = choose_tv_weight(op, None, noise_model(spec, op), seed=0, iterations=20)
    assert choice.tau == tau
    quiet, _ = choose_tv_weight(op, None, None, seed=0, iterations=20)
    assert quiet.tau < tau  # the noise raised the weight


def test_tv_tau_auto_typos_and_data_without_a_held_out_split_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--method", "tv", "--tv-tau", "autox"])
    assert exc.value.code == 2
    assert "a number >= 0 or auto, got 'autox'" in capsys.readouterr().err
    assert main(["attack", "--method", "tv", "--method-option", "tv.iterations=auto", "--image-size", "16"]) == 1
    assert "expected an integer" in capsys.readouterr().err  # only the weight takes auto
    # the real slices are one set for every split: tuning there would tune on the test images
    assert main(["attack", "--method", "tv", "--tv-tau", "auto", "--data", "real", "--size", "32",
                 "--no-progress", "--out", str(tmp_path / "r")]) == 1
    assert "same images" in capsys.readouterr().err and not (tmp_path / "r").exists()
