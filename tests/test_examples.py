"""The examples run as documented (docs/models.md: examples/byo_network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bring_your_own_network_example_trains_reloads_and_attacks(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "CTROBUST_CACHE_DIR": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, str(REPO / "examples" / "byo_network" / "train_and_attack.py"),
                          "--out", str(tmp_path / "byo"), "--quick"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "reloaded SmallFBPCNN" in res.stdout and "attacked: run" in res.stdout
    summary = json.loads((tmp_path / "byo" / "attack" / "summary.json").read_text())
    assert summary["models"][0]["info"]["model"]["factory"] == "mynets:make_net"
