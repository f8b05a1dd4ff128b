"""`ctrobust attack`, `evaluate` and `report`: the promised files exist and parse; clear errors and exit codes."""

import csv
import json
import shutil

import pytest

from ctrobust.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["--n-samples", "2", "--batch-size", "2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """best.pt of a tiny FBPConvNet (24 px, 10 views) trained for 2 steps by ctrobust.app.run_train."""
    from ctrobust.app import TrainSpec, run_train

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    result = run_train(TrainSpec(angles=10, size=24, n_train=4, n_val=2, max_steps=2, batch_size=2, channels=4,
                               depth=2, out=str(out), progress=False, device="cpu"))
    return result.best_checkpoint


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_attack_writes_the_promised_files(checkpoint, tmp_path):
    other = tmp_path / "other" / "best.pt"
    other.parent.mkdir()
    shutil.copy(checkpoint, other)
    out = tmp_path / "res"
    rc = main(["attack", "--checkpoint", str(checkpoint), "--checkpoint", str(other), "--eps-grid", "0,0.02",
               "--steps", "2", "--out", str(out), *SMALL])
    assert rc == 0
    rows = read_csv(out / "samples.csv")
    labels = {"tiny", "other", "FBP"}
    assert {r["model"] for r in rows} == labels
    assert len(rows) == 3 * 2 * 2 * 3  # models x eps x samples x (clean, random, attack)
    for r in rows:
        if r["condition"] == "attack":
            assert float(r["perturbation_norm"]) <= float(r["radius"]) * (1 + 1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "attack" and summary["config"]["eps_grid"] == [0.0, 0.02]
    assert {m["label"] for m in summary["models"]} == labels
    assert {(s["model"], s["eps"], s["condition"]) for s in summary["summary"]} == {
        (m, e, c) for m in labels for e in (0.0, 0.02) for c in ("clean", "random", "attack")}
    assert len(read_csv(out / "summary.csv")) == len(summary["summary"])
    for png in ("robustness_curve.png", "gallery.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_attack_fbp_method_alone(tmp_path, capsys):
    out = tmp_path / "fbp"
    rc = main(["attack", "--method", "fbp", "--image-size", "16", "--n-angles", "8", "--eps", "0.01", "--steps", "2",
               "--out", str(out), *SMALL])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["FBP"]
    assert summary["config"]["eps_grid"] == [0.0, 0.01] and summary["config"]["gallery_eps"] == 0.01
    assert "FBP" in capsys.readouterr().out


def test_nothing_to_attack_is_explained(capsys):
    assert main(["attack", "--out", "unused"]) == 1
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "--method fbp" in err


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    assert main(["evaluate", "--checkpoint", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "ctrobust evaluate: error:" in err and "bad.pt" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written on error


def test_missing_checkpoint_message(tmp_path, capsys):
    assert main(["attack", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "nope.pt" in err and ("not found" in err or "does not exist" in err)


def test_non_empty_out_is_refused_without_force(tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["attack", "--method", "fbp", "--image-size", "16", "--n-angles", "8", "--steps", "1", "--out", str(out), *SMALL]
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert main([*args, "--force"]) == 0
    assert (out / "summary.json").is_file() and (out / "keep.txt").read_text() == "mine"


def test_bad_arguments_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--method", "fbp", "--eps", "-0.1"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--method", "fbp", "--eps-grid", "0,abc"])
    assert exc.value.code == 2
    assert main(["attack", "--method", "tv-does-not-exist", "--image-size", "16", "--n-angles", "8",
                 "--out", "unused"]) == 1
    assert "unknown method" in capsys.readouterr().err


def test_evaluate_and_report(checkpoint, tmp_path, capsys):
    ev = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(ev), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "tiny" in printed and "FBP" in printed
    summary = json.loads((ev / "summary.json").read_text())
    assert {s["model"] for s in summary["summary"]} == {"tiny", "FBP"}
    assert all(s["n"] == 2 and 0 < s["ssim_mean"] <= 1 for s in summary["summary"])
    assert len(read_csv(ev / "samples.csv")) == 4
    at = tmp_path / "at"
    assert main(["attack", "--method", "fbp", "--image-size", "24", "--n-angles", "10", "--steps", "1",
                 "--out", str(at), *SMALL]) == 0
    report = tmp_path / "report.md"
    assert main(["report", str(at), str(ev), "--out", str(report)]) == 0
    text = report.read_text()
    assert "## at (attack)" in text and "## ev (evaluate)" in text and "gallery.png" in text
    assert main(["report", str(at), "--out", str(report)]) == 1  # exists, no --force
    assert main(["report", str(at), "--out", str(tmp_path / "report.html")]) == 0
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()


def test_attack_reports_convergence_exact_fbp_and_verification(checkpoint, tmp_path, capsys):
    out = tmp_path / "conv"
    rc = main(["attack", "--checkpoint", str(checkpoint), "--eps-grid", "0,0.02", "--attack", "pga", "--steps", "10",
               "--step-size", "0.01", "--target", "clean", "--verify", "2", "--verify-steps", "20", "--verify-restarts", "1",
               "--out", str(out), *SMALL])
    assert rc == 0
    captured = capsys.readouterr()
    # 10 fixed steps of 0.01 r cannot converge (the deviation still grows): the command says so
    assert "had not converged on 2/2 at eps 0.02" in captured.err and "--steps 20" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    attack_rows = [r for r in summary["summary"] if r["condition"] == "attack" and r["eps"] == 0.02]
    fbp = next(r for r in attack_rows if r["model"] == "FBP")
    net = next(r for r in attack_rows if r["model"] == "tiny")
    assert fbp["converged_mean"] == 0.0
    # FBP is linear: its exact worst case r^2 ||FBP||^2 is reported, and the crippled attack is far below it
    assert fbp["exact_sq_error_mean"] > fbp["deviation_mean"] and fbp["attack_over_exact_min"] < 0.5
    assert net["jacobian_norm_mean"] > 0 and "exact_sq_error_mean" not in net
    # --verify: a 20-step APGD finds much more than the crippled default
    verify = read_csv(out / "verify.csv")
    assert {r["model"] for r in verify} == {"tiny", "FBP"}
    assert all(float(r["ratio_min"]) < 0.9 for r in verify), verify
    assert "verification on 2 samples" in captured.out


def test_attack_with_restarts_reports_their_spread(checkpoint, tmp_path, capsys):
    # one tiny fixed step from random starts at random radii: the two runs end far apart
    out = tmp_path / "spread"
    rc = main(["attack", "--checkpoint", str(checkpoint), "--eps-grid", "0,0.02", "--attack", "pga", "--steps", "1",
               "--step-size", "0.01", "--restarts", "2", "--no-linearization", "--out", str(out), *SMALL])
    assert rc == 0
    err = capsys.readouterr().err
    assert "tiny: independent restarts: the second-best run fell short of the best by eps 0.02:" in err
    rows = [r for r in read_csv(out / "samples.csv") if r["condition"] == "attack" and float(r["eps"]) > 0]
    assert rows and all(0 <= float(r["restart_spread"]) < 1 for r in rows)
    assert max(float(r["restart_spread"]) for r in rows) > 0.005
    # FBP is linear: converged runs from any start find the same worst case
    out = tmp_path / "agree"
    rc = main(["attack", "--method", "fbp", "--image-size", "16", "--n-angles", "8", "--eps", "0.01", "--steps", "30",
               "--restarts", "2", "--out", str(out), *SMALL])
    assert rc == 0
    assert "FBP: independent restarts agree on every sample and eps (spread <= 0.5 %)" in capsys.readouterr().err


def test_every_attack_option_default_is_the_librarys():
    """The spec's defaults are read from the library (AttackSettings' fields, robustness_curve's and
    verify_attack's parameters, evaluate_features' settings): the default command attacks exactly as the
    default Python call, and a default changed in the library changes the command line with it."""
    import dataclasses

    from ctrobust.app.specs import AttackSpec, EvaluateSpec, signature_default
    from ctrobust.attacks import ATTACKS, TARGETS, AttackSettings
    from ctrobust.evaluation.features import FEATURE_ATTACK, evaluate_features
    from ctrobust.evaluation.robustness import (VERIFY_RESTARTS, VERIFY_SEED, VERIFY_STEPS, robustness_curve,
                                                verification_settings)

    spec, lib = AttackSpec(), AttackSettings()
    assert spec.attack_settings() == lib
    expected = {"attack": lib.rule, "steps": lib.steps, "restarts": lib.restarts, "step_size": lib.step_size,
                "target": lib.target, "absolute": not lib.relative, "warm_start": lib.warm_start, "seed": lib.seed,
                "linearization": signature_default(robustness_curve, "linearization"),
                "batch_size": signature_default(robustness_curve, "batch_size"),
                "n_samples": signature_default(robustness_curve, "max_samples"),
                "verify_steps": VERIFY_STEPS, "verify_restarts": VERIFY_RESTARTS}
    assert {k: getattr(spec, k) for k in expected} == expected
    assert spec.linearization is True  # the library follows the command line: the exact FBP worst case by default
    assert spec.verify_settings({"attack": "apgd"}) == verification_settings({"attack": "apgd"})
    assert spec.seed + 1 == VERIFY_SEED
    fields = {f.name: f.metadata for f in dataclasses.fields(AttackSpec)}
    from ctrobust.app.spec import resolve

    assert resolve(fields["attack"]["choices"]) == ATTACKS and resolve(fields["target"]["choices"]) == TARGETS
    # evaluate --small-features attacks with the library's feature attack
    from ctrobust.app.evaluate import feature_settings

    assert signature_default(evaluate_features, "settings") is FEATURE_ATTACK
    kw = feature_settings(EvaluateSpec(small_features=True))
    assert kw["settings"] == FEATURE_ATTACK.replace(seed=EvaluateSpec().seed)
    assert fields_default_text(EvaluateSpec, "feature_attack_steps") == FEATURE_ATTACK.steps
    given = feature_settings(EvaluateSpec(small_features=True, feature_attack_steps=7, seed=3))["settings"]
    assert given == FEATURE_ATTACK.replace(steps=7, seed=3)


def fields_default_text(spec_cls, name):
    """What ``--help`` shows as the library default of a ``None``-defaulted option."""
    import dataclasses

    return {f.name: f for f in dataclasses.fields(spec_cls)}[name].metadata["library_default"]()


def test_attack_spec_builds_its_settings_once(tmp_path):
    from ctrobust.app.specs import AttackSpec
    from ctrobust.attacks import AttackSettings

    spec = AttackSpec(attack="pga", steps=7, restarts=2, step_size=0.5, target="clean", absolute=True,
                      warm_start=True, seed=4, verify_steps=9, verify_restarts=3)
    assert spec.attack_settings() == AttackSettings(rule="pga", steps=7, restarts=2, step_size=0.5, target="clean",
                                                    relative=False, warm_start=True, seed=4)
    strong = spec.verify_settings(spec.attack_settings().to_config())
    assert strong == AttackSettings(rule="pga", steps=9, restarts=3, target="clean", relative=False, seed=5)
