"""Training: objectives (plain, weight-decay, parseval, minmax, pgd, universal, jitter), the trainer
(:func:`fit` for any model/operator; ``ctrobust train`` is :func:`ctrobust.app.run_train`), checkpoints, several
processes.

See docs/training.md.
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

_EXPORTS = {
    **dict.fromkeys(("load_checkpoint", "read_checkpoint", "load_model", "save_model"), "ctrobust.training.checkpoint"),
    **dict.fromkeys(("Objective", "Plain", "WeightDecay", "Parseval", "MinMax", "PGD", "Universal", "Jitter",
                     "OBJECTIVES", "make_objective", "build_objective"), "ctrobust.training.objectives"),
    **dict.fromkeys(("TrainResult", "fit", "NonFiniteLossError"), "ctrobust.training.trainer"),
}
#: modules reachable as attributes on first use
SUBMODULES = ("checkpoint", "distributed", "logs", "objectives", "parseval", "trainer")

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS, globals(), SUBMODULES)
