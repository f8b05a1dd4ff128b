"""Tables, figures and reports: files parse, writes are atomic and refuse to overwrite."""

import base64
import csv
import json
import math
import re

import numpy as np
import pytest

from ctrobust.evaluation import report as rp
from ctrobust.errors import CtrobustError

PNG = b"\x89PNG\r\n\x1a\n"


def summary_rows(model, scale=1.0):
    rows = []
    for eps in (0.0, 0.01, 0.02):
        for cond, k in (("clean", 0.0), ("random", 1.0), ("attack", 5.0)):
            err = scale * (0.1 + (k * eps if eps else 0.0))
            rows.append({"model": model, "eps": eps, "condition": cond, "n": 2, "relative_error_mean": err,
                         "relative_error_std": 0.01, "psnr_mean": -20 * math.log10(err), "psnr_std": 0.5,
                         "ssim_mean": 0.9 - err, "ssim_std": 0.01})
    return rows


def test_csv_and_json_roundtrip(tmp_path):
    rows = [{"model": "a", "eps": 0.01, "mse": np.float64(0.5)}, {"model": "b", "eps": 0.02, "mse": 0.25, "extra": 3}]
    path = rp.write_csv(rows, tmp_path / "t.csv")
    with open(path, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert list(read[0]) == ["model", "eps", "mse", "extra"]
    assert read[0]["extra"] == "" and read[1]["extra"] == "3"
    assert rp.read_csv(path)[1] == {"model": "b", "eps": 0.02, "mse": 0.25, "extra": 3.0}
    obj = {"a": np.float32(1.5), "b": [np.int64(2), float("nan")], "c": np.arange(3)}
    rp.write_json(obj, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text()) == {"a": 1.5, "b": [2, None], "c": [0, 1, 2]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "t.json"
    rp.write_json({"ok": 1}, target)
    with pytest.raises(TypeError):
        rp.write_json({"bad": object()}, target)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_prepare_output_dir(tmp_path):
    out = rp.prepare_output_dir(tmp_path / "new")
    assert out.is_dir()
    (out / "x.txt").write_text("keep")
    with pytest.raises(CtrobustError, match="not empty.*force=True"):
        rp.prepare_output_dir(out)
    assert rp.prepare_output_dir(out, force=True) == out and (out / "x.txt").read_text() == "keep"
    (tmp_path / "file").write_text("")
    with pytest.raises(CtrobustError, match="not a folder"):
        rp.prepare_output_dir(tmp_path / "file")


def test_format_table():
    rows = [{"model": "FBP", "psnr_mean": 30.123456}, {"model": "net", "psnr_mean": 31.0}]
    md = rp.format_table(rows, ["model", "psnr_mean"], style="markdown").splitlines()
    assert md[0] == "| model | psnr_mean |" and md[2] == "| FBP | 30.12 |"
    text = rp.format_table(rows, ["model", "psnr_mean"]).splitlines()
    assert len(text) == 3 and text[1].split() == ["FBP", "30.12"]


def test_figures_are_pngs(tmp_path):
    rp.plot_robustness_curves({"net": summary_rows("net"), "FBP": summary_rows("FBP", 2.0)}, tmp_path / "curve.png")
    rng = np.random.default_rng(0)
    img = rng.random((16, 16))
    rows = [{"label": "net", "truth": img, "fbp": img, "clean": img, "attack": img + 0.1, "delta": rng.standard_normal((6, 23))},
            {"label": "cs", "truth": img, "fbp": None, "clean": img, "attack": img, "delta": rng.standard_normal(40)}]
    rp.plot_gallery(rows, tmp_path / "gallery.png")
    for name in ("curve.png", "gallery.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def fake_result(folder, command="attack"):
    folder.mkdir()
    summary = summary_rows("net") if command == "attack" else [{"model": "net", "condition": "clean", "n": 2, "psnr_mean": 30.0, "psnr_std": 1.0}]
    rp.write_json({"command": command, "config": {"steps": 7, "eps_grid": [0, 0.01]}, "models": [{"label": "net", "source": "r/best.pt"}],
                   "summary": summary}, folder / "summary.json")
    rp.plot_robustness_curves({"net": summary_rows("net")}, folder / "robustness_curve.png")
    return folder


def test_markdown_report(tmp_path):
    a = fake_result(tmp_path / "runA")
    b = fake_result(tmp_path / "runB", "evaluate")
    out = tmp_path / "sub" / "report.md"
    out.parent.mkdir()
    rp.build_report([a, b], out)
    text = out.read_text()
    assert "## runA (attack)" in text and "## runB (evaluate)" in text and "steps = 7" in text
    # the attack table: one row per (model, eps) with clean / random / attack columns
    assert re.search(r"\| net \| 0.02 \| 0.1 \| 20 \| .* \| 0.12 \| .* \| 0.2 \|", text)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all((out.parent / link).resolve().is_file() for link in links)
    with pytest.raises(CtrobustError, match="already exists"):
        rp.build_report([a], out)
    rp.build_report([a], out, force=True)


def test_html_report_embeds_figures(tmp_path):
    a = fake_result(tmp_path / "runA")
    out = rp.build_report([a], tmp_path / "r.html")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<table>" in text
    data = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text).group(1)
    assert base64.b64decode(data) == (a / "robustness_curve.png").read_bytes()


def test_report_errors(tmp_path):
    with pytest.raises(CtrobustError, match="no summary.json"):
        rp.build_report([tmp_path], tmp_path / "r.md")
    with pytest.raises(CtrobustError, match=r"\.md or \.html"):
        rp.build_report([tmp_path], tmp_path / "r.pdf")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    with pytest.raises(CtrobustError, match="cannot read"):
        rp.build_report([bad], tmp_path / "r.md")
    assert not (tmp_path / "r.md").exists()
