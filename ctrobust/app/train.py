"""``run_train``: FBPConvNet on phantoms or a prepared HDF5 file with a robustness objective (``ctrobust train``).

The generic loop is :func:`ctrobust.training.fit`; this module builds its inputs from a
:class:`~ctrobust.app.specs.TrainSpec`: the data splits, the Radon transform, the model and the objective.
Every input is built (and so validated) before ``fit`` creates or changes the run folder.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ctrobust.app.specs import DEFAULT_SIZE, TrainSpec
from ctrobust.errors import CtrobustError

__all__ = ["run_train"]


def run_train(spec: TrainSpec, *, callbacks: Sequence[Callable[[int, dict], None]] = ()):
    """Train FBPConvNet as ``ctrobust train`` does; returns :class:`ctrobust.training.TrainResult`.

    The checkpoint's ``run`` record holds the spec as ``train_config`` (with the image size resolved).
    """
    from ctrobust.app.acquisition import build_geometry
    from ctrobust.data import load_split
    from ctrobust.models import FBPConvNet
    from ctrobust.operators.radon import RadonTransform
    from ctrobust.training.objectives import make_objective
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
    try:
        operator = RadonTransform(build_geometry(spec, size, spec.angles), backend=spec.backend)
        if spec.model == "lpd":
            from ctrobust.models.unrolled import LearnedPrimalDual

            model = LearnedPrimalDual(operator, seed=spec.seed)
        else:
            model = FBPConvNet(operator, spec.channels, spec.depth, spec.filter, norm=spec.norm, seed=spec.seed)
        objective = make_objective(spec.objective, eps=spec.eps, lam=spec.lam, relative=not spec.absolute,
                                   mu=spec.mu, beta=spec.beta, g_lr=spec.g_lr, g_steps=spec.g_steps,
                                   pgd_steps=spec.pgd_steps, mode=spec.adversary_mode, u_step=spec.u_step,
                                   seed=spec.seed)
    except ValueError as exc:
        raise CtrobustError(str(exc)) from exc
    noise = None
    if spec.photons is not None:
        from ctrobust.operators.noise import LogPoissonNoise

        noise = LogPoissonNoise.for_operator(spec.photons, operator)
    record = spec.to_dict()
    record["size"] = size
    return fit(model, operator, objective, train_set, val_set, epochs=spec.epochs, max_steps=spec.max_steps,
               batch_size=spec.batch_size, lr=spec.lr, scheduler=spec.scheduler, seed=spec.seed,
               device=spec.device, out=spec.out, resume=spec.resume, force=spec.force,
               num_workers=spec.num_workers, val_every=spec.val_every, save_every=spec.save_every,
               log_every=spec.log_every, progress=spec.progress, callbacks=callbacks,
               extra={"train_config": record}, noise=noise)
