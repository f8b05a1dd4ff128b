"""``run_train``: a network (FBPConvNet by default, or any model of the registry / a user's factory) on phantoms or
a prepared HDF5 file with a robustness objective (``ctrobust train``).

The generic loop is :func:`ctrobust.training.fit`; this module builds its inputs from a
:class:`~ctrobust.app.specs.TrainSpec`: the data splits, the Radon transform, the model
(``build_model(spec.model_config(), operator)``) and the objective (``build_objective(spec.objective,
**spec.objective_options())``).
Every input is built (and so validated) before ``fit`` creates or changes the run folder.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from ctrobust.app.specs import DEFAULT_SIZE, TrainSpec
from ctrobust.errors import CtrobustError

__all__ = ["run_train"]


def run_train(spec: TrainSpec, *, callbacks: Sequence[Callable[[int, dict], None]] = ()):
    """Train the spec's model as ``ctrobust train`` does; returns :class:`ctrobust.training.TrainResult`.

    The checkpoint's ``run`` record holds the spec as ``train_config`` (with the image size resolved).
    """
    from ctrobust.app.acquisition import build_geometry
    from ctrobust.app.inputs import noise_model
    from ctrobust.data import load_split
    from ctrobust.models.registry import build_model
    from ctrobust.operators.radon import RadonTransform
    from ctrobust.training.objectives import build_objective
    from ctrobust.training.trainer import fit

    size = spec.size if spec.size is not None else DEFAULT_SIZE
    if spec.data == "real":
        raise CtrobustError("--data real is the handful of real CT slices shipped with pydicom: an evaluation set, not "
                            "a training set. Train on phantoms or on a prepared file (data_prep/ has the recipes for "
                            "LoDoPaB-CT, LIDC-IDRI and Mayo), then evaluate with --data real")
    try:
        train_set = load_split(spec.data, "train", size=size, n_phantoms=spec.n_train, seed=spec.data_seed)
        # A small prepared file may have no validation patients: train without validation then.
        val_set = load_split(spec.data, "val", size=size, n_phantoms=spec.n_val, seed=spec.data_seed,
                             allow_empty=True)
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, CtrobustError):
            raise
        raise CtrobustError(f"cannot load the training data {spec.data or '(phantoms)'}: {exc}") from exc
    if spec.data is not None:
        if spec.size is not None and spec.size != train_set.image_size:
            raise CtrobustError(f"--size {spec.size} differs from the data's image size {train_set.image_size}; "
                                "omit --size to use the data's")
        size = int(train_set.image_size)
    if len(val_set) == 0:
        val_set = None
        if spec.data is not None and os.environ.get("RANK", "0") in ("", "0"):  # announced once: no validation
            import sys

            print(f"warning: the val split of {spec.data} is empty: training WITHOUT validation. best.pt is chosen by "
                  "the training loss (criterion 'train_loss'; no val_mse is reported). Prepare the data with 3 or more "
                  "patients and --val-fraction > 0 to validate", file=sys.stderr)
    try:
        operator = RadonTransform(build_geometry(spec, size, spec.angles), backend=spec.backend)
        objective = build_objective(spec.objective, **spec.objective_options())
    except ValueError as exc:
        raise CtrobustError(str(exc)) from exc
    try:
        model = build_model(spec.model_config(), operator, seed=spec.seed)
    except (ValueError, TypeError) as exc:  # an option the factory does not take, a model that refuses the operator
        raise CtrobustError(f"--model {spec.model}: {exc}") from exc
    noise = noise_model(spec, operator)
    record = spec.to_dict()
    record["size"] = size
    return fit(model, operator, objective, train_set, val_set, epochs=spec.epochs, max_steps=spec.max_steps,
               batch_size=spec.batch_size, lr=spec.lr, scheduler=spec.scheduler, seed=spec.seed,
               device=spec.device, out=spec.out, resume=spec.resume, force=spec.force,
               num_workers=spec.num_workers, val_every=spec.val_every, save_every=spec.save_every,
               log_every=spec.log_every, progress=spec.progress, callbacks=callbacks,
               extra={"train_config": record}, noise=noise)
