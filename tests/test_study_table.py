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


def test_extra_folders_of_another_attack_budget_add_rows_labelled_with_their_budget(tmp_path, capsys):
    full = {"steps": 100, "restarts": 2, "verify": 2, "verify_steps": 300, "verify_restarts": 3}
    for name, seed in (("s0", 0), ("s1", 1)):
        _board(tmp_path / name, seed, {"fbp": 0.08, "net": 0.04}, {"fbp": (0.11, 0.27), "net": (0.12, 0.40)})
    for name, seed in (("t0", 0), ("t1", 1)):
        _board(tmp_path / name, seed, {"tv": 0.05}, {"tv": (0.10, 0.30 + seed / 10)})
    for name, verify in (("s0", 2), ("s1", 2), ("t0", 0), ("t1", 0)):
        path = tmp_path / name / "leaderboard.json"
        board = json.loads(path.read_text())
        board["settings"]["attack"] = {**full, "verify": verify, "extend": 0}
        board["settings"]["verified"] = False
        path.write_text(json.dumps(board))
    args = [str(tmp_path / "s0"), str(tmp_path / "s1"), "--extra", str(tmp_path / "t0"), "--extra", str(tmp_path / "t1")]
    assert main([*args, "--out", str(tmp_path / "c")]) == 0
    combined = json.loads((tmp_path / "c" / "combined.json").read_text())
    rows = {r["model"]: r for r in combined["rows"]}
    assert rows["tv"]["seeds"] == 2 and rows["tv"]["attack_relative_error@0.04"] == pytest.approx(0.35)
    assert rows["tv"]["attack"] == "100x2, no verify, extend 0"
    assert rows["net"]["attack"] == "100x2, verify 2 x 300x3, extend 0"
    assert [r["model"] for r in combined["rows"]] == ["fbp", "tv", "net"]  # ranked together at the largest eps
    assert combined["extra_seeds"] == [0, 1]
    assert "| tv | 2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="both"):  # a model measured twice is refused
        main([str(tmp_path / "s0"), "--extra", str(tmp_path / "s1"), "--out", str(tmp_path / "d")])
    board = json.loads((tmp_path / "t1" / "leaderboard.json").read_text())
    board["settings"]["train_steps"] = 300
    (tmp_path / "t1" / "leaderboard.json").write_text(json.dumps(board))
    with pytest.raises(SystemExit, match="other than the attack budget"):
        main([*args, "--out", str(tmp_path / "e")])
