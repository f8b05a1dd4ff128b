"""experiments/raj2020_128px/table.py: leaderboards of several seeds combine into means per model; leaderboards of
another protocol or other settings are refused."""

from __future__ import annotations

import json

import pytest

from experiments.raj2020_128px.table import main


def _board(folder, seed, clean, attacked, fingerprint="abc", steps=1500):
    folder.mkdir(parents=True)
    cols = ["rank", "model", "clean_relative_error", "dose_relative_error", "attack_relative_error@0.01",
            "attack_relative_error@0.04", "verify_ratio", "restart_spread"]
    rows = [{"model": m, "clean_relative_error": clean[m], "dose_relative_error": clean[m] + 0.01,
             "attack_relative_error@0.01": attacked[m][0], "attack_relative_error@0.04": attacked[m][1],
             "verify_ratio": 0.99 - seed / 100, "restart_spread": 0.01 * (seed + 1)} for m in clean]
    (folder / "leaderboard.json").write_text(json.dumps({
        "fingerprint": fingerprint, "protocol": "raj2020", "columns": cols, "rows": rows,
        "settings": {"seed": seed, "train_steps": steps}, "not_verified_reason": "phantoms"}))


def test_seeds_combine_into_means_and_others_are_refused(tmp_path, capsys):
    _board(tmp_path / "s0", 0, {"fbp": 0.08, "net": 0.04}, {"fbp": (0.11, 0.27), "net": (0.12, 0.40)})
    _board(tmp_path / "s1", 1, {"fbp": 0.08, "net": 0.06}, {"fbp": (0.11, 0.27), "net": (0.10, 0.30)})
    assert main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "c")]) == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "c" / "combined.json").read_text())["rows"]}
    assert rows["net"]["clean_relative_error"] == pytest.approx(0.05)
    assert rows["net"]["attack_relative_error@0.04"] == pytest.approx(0.35)
    assert rows["net"]["attack_relative_error@0.04_seeds"] == "0.4000 / 0.3000"
    assert rows["net"]["verify_ratio"] == pytest.approx(0.98) and rows["net"]["restart_spread"] == pytest.approx(0.02)
    table = (tmp_path / "c" / "combined.md").read_text().splitlines()
    assert table[2].startswith("| fbp | 2 |") and table[3].startswith("| net | 2 |")  # ranked by the largest eps
    # a model only one seed has is averaged over that seed, and says so
    _board(tmp_path / "s2", 2, {"fbp": 0.08, "pgd": 0.07}, {"fbp": (0.11, 0.27), "pgd": (0.09, 0.20)})
    assert main([str(tmp_path / "s0"), str(tmp_path / "s2"), "--out", str(tmp_path / "p")]) == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "p" / "combined.json").read_text())["rows"]}
    assert rows["pgd"]["seeds"] == 1 and rows["pgd"]["attack_relative_error@0.04"] == pytest.approx(0.20)
    assert rows["net"]["seeds"] == 1 and rows["fbp"]["seeds"] == 2
    assert "0.3500 (0.4000 / 0.3000)" in capsys.readouterr().out
    _board(tmp_path / "other", 1, {"fbp": 0.08}, {"fbp": (0.11, 0.27)}, fingerprint="xyz")
    with pytest.raises(SystemExit, match="differ"):
        main([str(tmp_path / "s0"), str(tmp_path / "other"), "--out", str(tmp_path / "d")])
    _board(tmp_path / "short", 1, {"fbp": 0.08}, {"fbp": (0.11, 0.27)}, steps=300)
    with pytest.raises(SystemExit, match="differ"):
        main([str(tmp_path / "s0"), str(tmp_path / "short"), "--out", str(tmp_path / "e")])
