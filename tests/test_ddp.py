"""Several processes: ``torchrun --nproc_per_node=2 ctrobust train`` (gloo on CPU) equals one process on
the same global batch.

Why this comparison is exact (up to float rounding): DistributedSampler(seed) hands process r the
samples ``perm[r::2]`` of the epoch's permutation, so the two per-process batches of 2 together are
the single process's batch of 4; DDP averages the per-process mean-loss gradients, which equals the
gradient of the 4-sample mean; G's gradients are averaged the same way. Batch norm would break the
equality (CPU DDP normalises with per-process batch statistics; SyncBatchNorm is used on CUDA only),
so the test uses ``--norm none``.
"""

import os
import subprocess
import sys

import pytest
import torch

from ctrobust.training import read_checkpoint

ARGS = ["train", "--angles", "8", "--size", "24", "--channels", "4", "--depth", "1", "--norm", "none",
        "--n-train", "8", "--n-val", "2", "--objective", "minmax", "--eps", "0.05", "--max-steps", "3",
        "--lr", "1e-2", "--no-progress", "--device", "cpu"]


def _run(cmd, env):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shared", "memory"])
def test_two_process_gloo_equals_one_process(tmp_path, mode):
    """``memory``: each process steps the directions of its half of the batch and the processes exchange
    them (``distributed.share_rows``), so every process ends with the single process's memory."""
    args = [*ARGS, "--adversary-mode", mode]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    _run([sys.executable, "-m", "ctrobust", *args, "--batch-size", "4", "--out", str(tmp_path / "one")], env)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          "-m", "ctrobust", *args, "--batch-size", "2", "--out", str(tmp_path / "two")], env)
    one, two = read_checkpoint(tmp_path / "one" / "last.pt"), read_checkpoint(tmp_path / "two" / "last.pt")
    assert one["step"] == two["step"] == 3 and two["run"]["world_size"] == 2 and one["run"]["world_size"] == 1
    for name, a in one["model"]["state"].items():
        b = two["model"]["state"][name]
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (name, float((a - b).abs().max()))
    ga, gb = one["objective"]["state"]["adversary"], two["objective"]["state"]["adversary"]
    for name in ga:
        assert torch.allclose(ga[name], gb[name], rtol=1e-4, atol=1e-6), name
    if mode == "memory":  # 3 steps of 4 samples of 8: every visited sample's direction, in both runs
        ma, mb = one["objective"]["state"]["memory"], two["objective"]["state"]["memory"]
        assert ma["indices"].tolist() == mb["indices"].tolist() and len(ma["indices"]) >= 4
        assert torch.allclose(ma["directions"], mb["directions"], rtol=1e-4, atol=1e-6)
    # the weights moved: the comparison is not between two untouched initialisations
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.models import FBPConvNet
    from ctrobust.operators.radon import RadonTransform

    init = FBPConvNet(RadonTransform(ParallelBeam2D(24, 8)), 4, 1, norm="none", seed=0).state_dict()
    assert all(not torch.equal(init[k], one["model"]["state"][k]) for k in init)
    # only process 0 wrote files, and the logged loss is the global-batch mean
    import json

    rows_one = [json.loads(r) for r in (tmp_path / "one" / "steps.jsonl").read_text().splitlines()]
    rows_two = [json.loads(r) for r in (tmp_path / "two" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_two] == [1, 2, 3]
    for a, b in zip(rows_one, rows_two):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"])
