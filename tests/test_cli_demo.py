"""`ctrobust demo --quick`: every stage runs and writes what it promises; an existing result is kept."""

import json

import pytest

from ctrobust.cli import main


@pytest.mark.slow
def test_demo_quick_writes_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    for name in ("operator.png", "operator.json", "plain/best.pt", "minmax/best.pt", "attack/summary.json",
                 "attack/robustness_curve.png", "attack/gallery.png", "attack/samples.csv", "report.md",
                 "report.training.png", "timings.json"):
        assert (out / name).is_file(), name
    numbers = json.loads((out / "operator.json").read_text())
    # 32 px Shepp-Logan from 30 views: FBP is rough but of the right scale; the adjoint is exact.
    assert 0.05 < numbers["fbp_relative_error"] < 0.6
    assert numbers["adjoint_dot_test_float64"] < 1e-10
    summary = json.loads((out / "attack" / "summary.json").read_text())
    assert {row["model"] for row in summary["summary"]} == {"plain", "minmax", "FBP"}
    assert (out / "attack" / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_refuses_a_non_empty_out(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "earlier result"


def test_demo_help_states_units(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "relative to ||y||_2" in text and "pixels" in text
