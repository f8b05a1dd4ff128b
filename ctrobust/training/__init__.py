"""Training: objectives (plain, weight-decay, parseval, minmax, pgd, universal, jitter), the trainer
(:func:`fit` for any model/operator, :func:`train` for ``ctrobust train``), checkpoints, several processes.

See docs/training.md.
"""

from __future__ import annotations

from ctrobust.training.checkpoint import load_checkpoint, read_checkpoint
from ctrobust.training.objectives import (OBJECTIVES, PGD, Jitter, MinMax, Objective, Parseval, Plain, Universal,
                                          WeightDecay, build_objective, make_objective)
from ctrobust.training.trainer import NonFiniteLossError, TrainConfig, TrainResult, fit, train

__all__ = ["TrainConfig", "TrainResult", "train", "fit", "load_checkpoint", "read_checkpoint", "Objective",
           "Plain", "WeightDecay", "Parseval", "MinMax", "PGD", "Universal", "Jitter", "OBJECTIVES",
           "make_objective", "build_objective", "NonFiniteLossError"]
