"""``ctrobust train``: train FBPConvNet with an objective (a thin layer over :func:`ctrobust.training.train`).

Runs unchanged under ``torchrun --nproc_per_node=K ctrobust-train-args...`` (see docs/training.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from ctrobust.cli.argtypes import image_size, nonneg_float, nonneg_int, positive_float, positive_int
from ctrobust.errors import CtrobustError

_D = None


def _defaults():
    global _D
    if _D is None:
        from ctrobust.training.trainer import TrainConfig

        _D = TrainConfig()
    return _D




def add_parser(subparsers):
    from ctrobust.models.adversary import MODES
    from ctrobust.models.unet import NORMS
    from ctrobust.operators.radon import BACKENDS
    from ctrobust.training.objectives import OBJECTIVES
    from ctrobust.training.trainer import SCHEDULERS

    d = _defaults()
    p = subparsers.add_parser(
        "train",
        help="train FBPConvNet with an objective (plain, weight-decay, parseval, minmax, pgd, universal, jitter)",
        description="Train FBPConvNet (FBP + residual U-Net) on sinograms y = A x of built-in phantoms or a "
        "prepared HDF5 file, with a robustness objective. Writes logs and last.pt/best.pt into --out. "
        "Runs unchanged under torchrun --nproc_per_node=K (one process per CPU group or GPU).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("geometry and data")
    g.add_argument("--angles", type=positive_int, default=d.angles,
                   help="number of parallel-beam views, uniformly on [0, pi) radians (the paper: 143)")
    g.add_argument("--size", type=image_size, default=d.size,
                   help=f"image side N in pixels (at least 8); default: the data's size, or {d.DEFAULT_SIZE} "
                   "for phantoms")
    g.add_argument("--data", default=d.data, metavar="DATASET.h5",
                   help="prepared-slice HDF5 file (ctrobust prepare-dicom / make-phantoms): trains on its train "
                   "split, validates on its val split; default: built-in random-ellipse phantoms")
    g.add_argument("--n-train", type=positive_int, default=d.n_train,
                   help="number of training phantoms without --data (default: the built-in 256)")
    g.add_argument("--n-val", type=nonneg_int, default=d.n_val,
                   help="number of validation phantoms without --data (default: the built-in 32)")
    g.add_argument("--data-seed", type=nonneg_int, default=d.data_seed, help="seed of the built-in phantoms (>= 0)")
    g.add_argument("--filter", default=d.filter,
                   help="FBP filter inside FBPConvNet (ram-lak, shepp-logan, cosine, hamming, hann)")
    g.add_argument("--backend", choices=BACKENDS, default=d.backend, help="Radon transform backend")

    o = p.add_argument_group("objective")
    o.add_argument("--objective", choices=list(OBJECTIVES), default=d.objective,
                   help="training objective (docs/training.md)")
    o.add_argument("--eps", type=nonneg_float, default=d.eps,
                   help="perturbation radius for minmax/pgd/universal/jitter: a fraction of ||y||_2 per sample "
                   "(0.01 = 1 %%), or in sinogram units with --absolute")
    o.add_argument("--absolute", dest="relative", action="store_false",
                   help="--eps is an absolute l2 radius in sinogram units instead of relative to ||y||")
    o.add_argument("--lam", type=nonneg_float, default=d.lam,
                   help="weight lambda of the perturbed term mse(f(y + delta), x) (dimensionless)")
    o.add_argument("--adversary-mode", choices=MODES, default=d.adversary_mode,
                   help="minmax: the adversary G. shared: one learned direction u at the full radius, moved by "
                   "normalised ascent with the gradient of f's own backward pass (no extra pass; default); "
                   "conditioned: normalize(u + h(y)) with a CNN h (the paper's y-dependent G); project / sphere / "
                   "penalty: a CNN alone with its own Adam ascent passes (kept for comparison: weak in CT, "
                   "docs/training.md)")
    o.add_argument("--u-step", type=positive_float, default=d.u_step,
                   help="minmax shared/conditioned: normalised ascent step of the unit direction u per f step "
                   "(dimensionless, a fraction of ||u|| = 1)")
    o.add_argument("--g-lr", type=positive_float, default=d.g_lr,
                   help="minmax: Adam learning rate of G's network (h in conditioned mode, the CNN in project/sphere/penalty)")
    o.add_argument("--g-steps", type=positive_int, default=d.g_steps,
                   help="minmax project/sphere/penalty and universal: ascent passes on the adversary per f step")
    o.add_argument("--pgd-steps", type=positive_int, default=d.pgd_steps,
                   help="pgd: projected gradient ascent steps per sample per f step")
    o.add_argument("--mu", type=nonneg_float, default=d.mu,
                   help="weight-decay: weight mu of sum ||theta||^2 added to the per-pixel MSE")
    o.add_argument("--beta", type=nonneg_float, default=d.beta,
                   help="parseval: retraction strength beta (W <- (1+beta) W - beta W W^T W after each step)")

    t = p.add_argument_group("optimisation")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, default=d.epochs,
                        help="passes over the training set (default 10 when --max-steps is not given)")
    length.add_argument("--max-steps", type=nonneg_int, default=d.max_steps,
                        help="stop after this many optimiser steps in total, counting steps before a --resume")
    t.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help="images per step per process (global batch = this x number of processes)")
    t.add_argument("--lr", type=positive_float, default=d.lr, help="Adam learning rate of the network")
    t.add_argument("--scheduler", choices=SCHEDULERS, default=d.scheduler,
                   help="learning-rate schedule over all steps: cosine to 0, step (x0.1 at 50%% and 75%%), constant")
    t.add_argument("--channels", type=positive_int, default=d.channels,
                   help="U-Net channels of the first level (Jin et al.: 64; 8 trains fast on a laptop)")
    t.add_argument("--depth", type=nonneg_int, default=d.depth, help="U-Net poolings (Jin et al.: 4)")
    t.add_argument("--norm", choices=NORMS, default=d.norm, help="U-Net normalisation layers")
    t.add_argument("--seed", type=int, default=d.seed, help="seed of the weights, the adversary and the data order")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device,
                   help="where to train; auto = cuda when available")
    t.add_argument("--num-workers", type=nonneg_int, default=d.num_workers, help="DataLoader worker processes")

    r = p.add_argument_group("output")
    r.add_argument("--out", default=d.out, help="run directory for logs, config.json, last.pt and best.pt")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt (Ctrl-C or "
                   "SIGTERM let the step in progress finish and save last.pt first)")
    r.add_argument("--force", action="store_true", help="overwrite the run files in a non-empty --out")
    r.add_argument("--val-every", type=positive_int, default=d.val_every,
                   help="validate and checkpoint every this many steps (default: at every epoch end)")
    r.add_argument("--save-every", type=positive_int, default=d.save_every,
                   help="also save last.pt every this many steps (default: only when validating)")
    r.add_argument("--log-every", type=positive_int, default=d.log_every, help="write a step log row every this many steps")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _rank_from_env() -> int:
    import os

    return int(os.environ.get("RANK", "0") or 0)


def run(args) -> int:
    from ctrobust.training.trainer import TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if config.resume and config.force:
        raise CtrobustError("--resume and --force contradict each other: choose one")
    from ctrobust.training import distributed as D

    try:
        result = train(config)
    finally:
        if D.is_distributed():
            import torch.distributed as dist

            dist.destroy_process_group()
    if result.out is None or _rank_from_env() == 0:
        summary = {"out": str(result.out), "steps": result.steps, "final_loss": result.final_loss,
                   "metrics": result.metrics, "best": result.best,
                   "last_checkpoint": str(result.last_checkpoint), "best_checkpoint": str(result.best_checkpoint)}
        print(json.dumps(summary, indent=2))
    return 0
