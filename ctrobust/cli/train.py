"""``ctrobust train``: the options are :class:`ctrobust.app.TrainSpec`, the work :func:`ctrobust.app.run_train`.

Runs unchanged under ``torchrun --nproc_per_node=K ctrobust-train-args...`` (see docs/training.md).
"""

from __future__ import annotations

import json
import os

from ctrobust.app.specs import TrainSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "train", TrainSpec, run=run,
        help="train a network (FBPConvNet, LPD or your own) with an objective (plain, weight-decay, parseval, minmax, "
        "pgd, universal, jitter)",
        description="Train a reconstruction network (FBPConvNet, FBP + residual U-Net, by default; --model names "
        "another or your own factory, docs/models.md) on sinograms y = A x of built-in phantoms or a "
        "prepared HDF5 file, with a robustness objective. Writes logs and last.pt/best.pt into --out. "
        "Runs unchanged under torchrun --nproc_per_node=K (one process per CPU group or GPU).")


def run(args) -> int:
    from ctrobust.app.train import run_train
    from ctrobust.training import distributed as D

    spec = spec_from_args(TrainSpec, args)
    try:
        result = run_train(spec)
    finally:
        if D.is_distributed():
            import torch.distributed as dist

            dist.destroy_process_group()
    if result.out is None or int(os.environ.get("RANK", "0") or 0) == 0:
        summary = {"out": str(result.out), "steps": result.steps, "final_loss": result.final_loss,
                   "metrics": result.metrics, "best": result.best,
                   "last_checkpoint": str(result.last_checkpoint), "best_checkpoint": str(result.best_checkpoint)}
        print(json.dumps(summary, indent=2))
    return 0
