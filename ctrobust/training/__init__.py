"""Training: objectives (plain, weight-decay, parseval, minmax, pgd, universal, jitter), the trainer
(:func:`fit` for any model/operator; ``ctrobust train`` is :func:`ctrobust.app.run_train`), checkpoints, several
processes.

See docs/training.md.
"""

from __future__ import annotations

from ctrobust.training.checkpoint import load_checkpoint, read_checkpoint
from ctrobust.training.objectives import (OBJECTIVES, PGD, Jitter, MinMax, Objective, Parseval, Plain, Universal,
                                          WeightDecay, build_objective, make_objective)
from ctrobust.training.trainer import NonFiniteLossError, TrainResult, fit

__all__ = ["TrainResult", "fit", "load_checkpoint", "read_checkpoint", "Objective",
           "Plain", "WeightDecay", "Parseval", "MinMax", "PGD", "Universal", "Jitter", "OBJECTIVES",
           "make_objective", "build_objective", "NonFiniteLossError"]
