"""The trainer: :func:`fit` trains any model, operator, objective and dataset (``ctrobust train`` builds them in
:func:`ctrobust.app.run_train`).

See docs/training.md. In short: images ``x`` come from the dataset, the trainer measures ``y = A x``
(no noise), the objective returns the loss, Adam takes a step, and the learning rate follows a
per-step schedule. Files in ``out``: ``config.json``, ``steps.{csv,jsonl}`` (every ``log_every``
steps), ``epochs.{csv,jsonl}``, ``validation.{csv,jsonl}``, ``last.pt`` and ``best.pt``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ctrobust.errors import CtrobustError
from ctrobust.files import check_output_dir, resolve_device
from ctrobust.training import distributed as D
from ctrobust.training.checkpoint import (model_state, operator_config, read_checkpoint, rng_state,
                                          save_checkpoint, set_rng_state)
from ctrobust.training.logs import RunLog, data_fingerprint
from ctrobust.training.objectives import OBJECTIVES, Objective, make_objective

__all__ = ["TrainResult", "fit", "NonFiniteLossError", "SCHEDULERS", "RUN_FILES"]

SCHEDULERS = ("cosine", "step", "constant")
#: Files the trainer writes into ``out`` (``--force`` removes exactly these before a fresh run).
RUN_FILES = ("config.json", "last.pt", "best.pt", "steps.csv", "steps.jsonl", "epochs.csv", "epochs.jsonl",
             "validation.csv", "validation.jsonl")


class NonFiniteLossError(CtrobustError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


def _lr_lambda(kind: str, total: int) -> Callable[[int], float]:
    if kind == "cosine":
        return lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / max(total, 1)))
    if kind == "step":  # x0.1 at 50 % and again at 75 % of the steps
        return lambda s: 0.1 ** ((s >= total // 2) + (s >= (3 * total) // 4))
    if kind == "constant":
        return lambda s: 1.0
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")


@dataclasses.dataclass
class TrainResult:
    """What :func:`fit` returns.

    ``model`` is the trained network (the module itself, not a DDP wrapper, left in eval mode);
    ``steps`` the optimiser steps done in total (including steps before a resume); ``history`` the
    logged step rows of this call; ``validation`` the validation rows of this call; ``metrics`` the
    last validation metrics; ``best`` ``{"step", "val_mse"}`` (or the training-loss criterion without a
    validation set); ``out``, ``last_checkpoint``, ``best_checkpoint`` paths (None without ``out``).
    """

    model: nn.Module
    steps: int
    epoch: int
    final_loss: float
    history: list
    validation: list
    metrics: dict
    best: dict
    out: Path | None = None
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


class _HeldSignals:
    """Hold SIGINT (Ctrl-C) and SIGTERM while training runs, so that they act between steps.

    A held signal sets :attr:`pending`; the training loop checks it after each step (the model,
    optimiser and RNG states are then consistent), saves ``last.pt`` and hands the signal on with
    :meth:`deliver`. A second signal while one is pending acts at once (Ctrl-C twice: stop now; the step
    in progress is lost). Handlers can only be set in the main thread; elsewhere signals act as usual.
    """

    def __init__(self):
        import signal
        import threading

        self.pending = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old = signal.getsignal(sig)
                if old is not signal.SIG_IGN and old is not None:
                    self._previous[sig] = old
                    signal.signal(sig, self._hold)

    def _hold(self, signum, frame):
        if self.pending is None:
            self.pending = signum
        else:
            self.pending = None
            self.deliver(signum)

    def restore(self) -> None:
        import signal

        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous = {}

    def deliver(self, signum) -> None:
        """Give ``signum`` to the handler it had before (Ctrl-C: ``KeyboardInterrupt``; SIGTERM under the
        command line: its ``Terminated``; SIGTERM's default: the process ends)."""
        import signal

        self.pending = None
        self.restore()
        signal.raise_signal(signum)
        raise KeyboardInterrupt  # the previous handler returned: stop all the same


def _interrupt_note(out, last_path, saved_at: int, step: int, total: int, consistent: bool) -> str:
    """What a stopped run left on disk (printed on Ctrl-C / SIGTERM)."""
    lost = "" if consistent else f" (step {step + 1} was in progress and is lost)"
    if out is None:
        return f"ctrobust: training stopped after step {step} of {total}{lost}; nothing saved (no output directory)"
    if saved_at < 0:
        return f"ctrobust: training stopped after step {step} of {total}{lost}; nothing saved yet"
    behind = f", steps {saved_at + 1}-{step} are not in it" if saved_at < step else ""
    return (f"ctrobust: training stopped after step {step} of {total}{lost}; {last_path} holds step {saved_at}"
            f"{behind}; continue with --resume")


def _images_of(batch):
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _check_out(out: Path | None, resume: bool, force: bool) -> None:
    if out is None:
        if resume:
            raise CtrobustError("resume needs an output directory (out=...) to resume from")
        return
    check_output_dir(out, force, resume=resume)


@torch.no_grad()
def _validate(module, operator, val_set, batch_size, device, dtype) -> dict:
    from ctrobust import metrics as M

    was_training = module.training
    module.eval()
    image_shape = tuple(getattr(operator, "image_shape", None) or operator.domain_shape[-2:])
    sums: dict[str, float] = {}
    count = 0
    loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, generator=torch.Generator().manual_seed(0))
    for batch in loader:
        x = _images_of(batch).to(device=device, dtype=dtype)
        x = x.reshape(x.shape[0], *operator.domain_shape)
        f = module(operator(x))
        values = {"mse": M.mse(f, x), "relative_error": M.relative_error(f, x)}
        if len(image_shape) == 2 and math.prod(image_shape) == x[0].numel():
            img_f = f.reshape(f.shape[0], 1, *image_shape)
            img_x = x.reshape(x.shape[0], 1, *image_shape)
            values["psnr"] = M.psnr(img_f, img_x)
            values["ssim"] = M.ssim(img_f, img_x)
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(v))
        count += x.shape[0]
    module.train(was_training)
    return {f"val_{k}": v / max(count, 1) for k, v in sums.items()}


def _objective_validation(objective, module, operator, val_set, batch_size, device, dtype) -> dict:
    """The objective's own validation numbers (min-max: ``g_efficiency``) on the first validation batch."""
    if type(objective).validation_metrics is Objective.validation_metrics:
        return {}
    batch = next(iter(DataLoader(val_set, batch_size=batch_size, shuffle=False,
                                 generator=torch.Generator().manual_seed(0))))  # never the global RNG
    x = _images_of(batch).to(device=device, dtype=dtype).reshape(-1, *operator.domain_shape)
    with torch.no_grad():
        y = operator(x)
    out = objective.validation_metrics(module, x, y)
    eff = out.get("g_efficiency")
    if eff is not None and eff < 0.5:
        print(f"ctrobust: warning: the adversary reaches only {eff:.2f} of a per-sample attack's loss gain on the "
              "validation batch (g_efficiency < 0.5): f is trained against a weak inner maximisation "
              "(see docs/training.md)", file=sys.stderr)
    return out


def fit(
    model: nn.Module,
    operator,
    objective: Objective | str,
    train_set,
    val_set=None,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int = 8,
    lr: float = 1e-3,
    scheduler: str = "cosine",
    seed: int = 0,
    device: str | torch.device = "cpu",
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    num_workers: int = 0,
    val_every: int | None = None,
    save_every: int | None = None,
    log_every: int = 1,
    progress: bool = True,
    callbacks: Sequence[Callable[[int, dict], None]] = (),
    extra: dict | None = None,
) -> TrainResult:
    """Train ``model`` to reconstruct ``x`` from ``y = operator(x)`` with ``objective``.

    Parameters
    ----------
    model : torch.nn.Module
        ``f``: measurements ``(B, *operator.range_shape)`` -> ``(B, *operator.domain_shape)``, e.g.
        FBPConvNet (sinograms ``(B, 1, A, D)`` -> images ``(B, 1, N, N)``), CSResidualNet or
        LinearReconstruction (``(B, m)`` -> ``(B, n)``). Must have ``config()`` to be checkpointed.
    operator : LinearOperator
        ``A`` (RadonTransform or a CS operator); it measures each batch, ``y = A x``.
    objective : Objective or str
        An :class:`~ctrobust.training.objectives.Objective`, or a name with default options.
    train_set, val_set : torch Dataset
        Items are images (or ``(image, ...)`` tuples) with ``prod(operator.domain_shape)`` entries,
        e.g. ``(1, N, N)`` or ``(n,)``; they are reshaped to ``(B, *operator.domain_shape)``.
        Validation (MSE, relative error, and PSNR/SSIM at data range 1 for 2-D images) runs on
        ``val_set`` in process 0 only.
    epochs, max_steps : int
        Length: ``max_steps`` optimiser steps in total (counting steps done before a resume), else
        ``epochs`` passes over the data (default 10). An epoch is ``len(train_set) // (batch_size * K)``
        steps for K processes (incomplete batches are dropped).
    batch_size : int
        Per-process batch; the global batch is ``batch_size * K``.
    lr, scheduler : float, {"cosine", "step", "constant"}
        Adam learning rate and its per-step schedule over the whole run (cosine to 0; or x0.1 at 50 %
        and 75 % of the steps).
    seed : int
        Seed of the data order (a fresh permutation per epoch, ``DistributedSampler`` with this seed).
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; under several processes CUDA runs use ``cuda:LOCAL_RANK``.
    out : path-like, optional
        Run directory for logs and checkpoints; ``None`` writes nothing. A non-empty ``out`` is
        refused unless ``resume`` (continue from ``out/last.pt``) or ``force`` (remove the run files).
    num_workers : int
        DataLoader worker processes.
    val_every, save_every, log_every : int
        Validate (and save ``last.pt``/``best.pt``) every ``val_every`` steps (default: every epoch
        end), also save ``last.pt`` every ``save_every`` steps, log every ``log_every`` steps.
    progress : bool
        tqdm progress bar (on a terminal, process 0).
    callbacks : sequence of callables
        ``cb(step, logs)`` after every step (after any checkpoint of that step), e.g. to stop early.
    extra : dict, optional
        JSON-able entries stored in the checkpoint's ``run`` record (``run_train`` stores its TrainSpec).

    Returns
    -------
    TrainResult

    Raises
    ------
    NonFiniteLossError
        If a loss becomes NaN/Inf (``last.pt`` keeps the last good state).
    CtrobustError
        For a non-empty ``out`` without resume/force, an incompatible checkpoint, too little data.
    """
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise CtrobustError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        objective = make_objective(objective, seed=seed)
    if scheduler not in SCHEDULERS:
        raise CtrobustError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if max_steps is not None and max_steps < 0:
        raise CtrobustError(f"max_steps must be >= 0, got {max_steps}")
    if batch_size < 1:
        raise CtrobustError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out) if out is not None else None
    info = D.init_distributed(resolve_device(device))
    device, main = info.device, info.is_main
    _check_out(out, resume, force)
    D.barrier()  # every process checked ``out`` before process 0 writes into it

    module = model.to(device)
    if isinstance(operator, nn.Module) and any(True for _ in operator.buffers()):
        operator.to(device)  # CS operators keep their matrix as a buffer
    if info.world_size > 1 and device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module.train()
    dtype = next(module.parameters()).dtype
    objective.setup(module, operator, device=device)

    world = info.world_size
    sampler = DistributedSampler(train_set, num_replicas=world, rank=info.rank, shuffle=True, seed=seed, drop_last=True)
    per_epoch = len(sampler) // batch_size
    if per_epoch == 0:
        raise CtrobustError(f"the training set has {len(train_set)} samples, fewer than one global batch "
                            f"({batch_size} x {world} processes); lower --batch-size or add data")
    if max_steps is None and epochs is None:
        epochs = 10
    total = int(max_steps) if max_steps is not None else int(epochs) * per_epoch
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(scheduler, total))
    fingerprint = data_fingerprint(train_set)
    run_record = {"batch_size": batch_size, "lr": lr, "scheduler": scheduler, "seed": seed, "world_size": world,
                  "total_steps": total, **(extra or {})}

    step, epoch, in_epoch = 0, 0, 0
    metrics: dict = {}
    best = {"step": None, "val_mse": None, "criterion": "val_mse" if val_set is not None else "train_loss"}
    last_path = out / "last.pt" if out is not None else None
    best_path = out / "best.pt" if out is not None else None
    resumed = False
    if resume and last_path.exists():
        ckpt = read_checkpoint(last_path)
        _check_compatible(ckpt, module, operator, objective, fingerprint, batch_size, world, seed, last_path)
        module.load_state_dict(ckpt["model"]["state"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        objective.load_state_dict(ckpt["objective"]["state"])
        set_rng_state(ckpt["rng"])
        step, epoch, in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch_in_epoch"])
        metrics, best = dict(ckpt.get("metrics") or {}), dict(ckpt.get("best") or best)
        resumed = True
    elif resume and main:
        print(f"ctrobust: nothing to resume in {out} (no last.pt); starting a new run", file=sys.stderr)

    log = None
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        if not resumed:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        log = RunLog(out)
        if resumed:
            log.truncate(step)
        else:
            log.write_json("config.json", {"model": module.config() if hasattr(module, "config") else None,
                                           "operator": operator_config(operator), "objective": objective.config(),
                                           "data": fingerprint, "run": run_record})

    ddp = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)

    def payload() -> dict:
        geometry = getattr(operator, "geometry", None)
        return {
            "model": {"config": module.config(), "state": model_state(module)},
            "operator": operator_config(operator),
            "geometry": geometry.to_dict() if geometry is not None else None,
            "objective": {"config": objective.config(), "state": objective.state_dict()},
            "optimizer": optimizer.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
            "step": step, "epoch": epoch, "batch_in_epoch": in_epoch, "data": fingerprint,
            "metrics": metrics, "best": best, "run": run_record,
        }

    def save(validated: bool, train_loss: float | None) -> None:
        nonlocal best
        if out is None or not main:
            return
        data = payload()
        save_checkpoint(last_path, data)
        if validated and "val_mse" in metrics:
            score = metrics["val_mse"]
        elif val_set is None and train_loss is not None:
            score = train_loss
        else:
            return
        if best["val_mse"] is None or score <= best["val_mse"] or not best_path.exists():
            best = {"step": step, "val_mse": float(score), "criterion": best["criterion"]}
            data["best"] = best
            save_checkpoint(best_path, data)

    def validate() -> None:
        nonlocal metrics
        if val_set is not None and main:
            metrics = _validate(module, operator, val_set, batch_size, device, dtype)
            metrics.update(_objective_validation(objective, module, operator, val_set, batch_size, device, dtype))
            row = {"step": step, "epochs_done": epoch, **metrics}
            validation.append(row)
            if log:
                log.append("validation", row)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=min(step, total), desc=f"train {objective.name}", unit="step",
               disable=not (progress and main and sys.stderr.isatty()), dynamic_ncols=True)
    history: list = []
    validation: list = []
    running: float | None = None
    since_save: list = []
    epoch_losses: list = []
    last_loss = float("nan")
    saved_at = step if resumed else -1
    consistent = True
    held = _HeldSignals()  # Ctrl-C / SIGTERM act between steps, after last.pt is saved
    try:
        while step < total:
            sampler.set_epoch(epoch)
            indices = list(sampler)
            batches = [indices[i * batch_size:(i + 1) * batch_size] for i in range(in_epoch, per_epoch)]
            # an explicit generator: the loader's worker base seed must not come from the global RNG
            loader = DataLoader(train_set, batch_sampler=batches, num_workers=num_workers,
                                generator=torch.Generator().manual_seed(seed * 100003 + epoch))
            for batch in loader:
                consistent = False
                t0 = time.perf_counter()
                x = _images_of(batch).to(device=device, dtype=dtype)
                x = x.reshape(x.shape[0], *operator.domain_shape)
                with torch.no_grad():
                    y = operator(x)
                loss, logs = objective.loss(ddp, x, y, module)
                if not D.all_true(bool(torch.isfinite(loss.detach()).all()), device):
                    where = f"{last_path} (step {saved_at})" if out is not None and saved_at >= 0 else "none was saved yet"
                    raise NonFiniteLossError(
                        f"the training loss became {float(loss.detach())} at step {step + 1} (epoch {epoch}); "
                        f"training stopped. Last good checkpoint: {where}. Try a lower --lr, check the data, "
                        "then continue with --resume.")
                if world > 1:  # log the global-batch means, not process 0's share
                    keys = sorted(logs)
                    mean = D.average_tensor(torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device))
                    logs = dict(zip(keys, mean.tolist()))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sched.step()
                objective.after_step(module)
                step += 1
                in_epoch += 1
                last_loss = float(logs.get("loss", float(loss.detach())))
                running = last_loss if running is None else 0.9 * running + 0.1 * last_loss
                since_save.append(last_loss)
                epoch_losses.append(last_loss)
                row = {"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **logs,
                       "seconds": time.perf_counter() - t0}
                if step % max(log_every, 1) == 0 or step == total:
                    history.append(row)
                    if log:
                        log.append("steps", row)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "clean", "perturbed")}
                                | {"avg": f"{running:.4g}"}
                                | ({"g_eff": f"{metrics['g_efficiency']:.2f}"} if "g_efficiency" in metrics else {}))
                end_of_epoch = in_epoch == per_epoch
                if end_of_epoch:
                    epoch_row = {"epoch": epoch, "step": step, "train_loss": float(np.mean(epoch_losses))}
                    epoch += 1
                    in_epoch = 0
                    epoch_losses = []
                    if val_every is None:
                        validate()
                        epoch_row.update(metrics)
                    if log:
                        log.append("epochs", epoch_row)
                validated = (val_every is None and end_of_epoch) or (val_every is not None and step % val_every == 0)
                if validated and val_every is not None:
                    validate()
                if validated or (save_every and step % save_every == 0) or end_of_epoch:
                    save(validated, float(np.mean(since_save)))
                    since_save, saved_at = [], step
                consistent = True
                for cb in callbacks:
                    cb(step, logs)
                if held.pending is not None:
                    raise KeyboardInterrupt
                if step >= total:
                    break
        if saved_at != step:  # stopped by max_steps between checkpoints
            if not (validation and validation[-1]["step"] == step):
                validate()
            save(True, float(np.mean(since_save)) if since_save else None)
            saved_at = step
        if held.pending is not None:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if consistent and saved_at != step:
            save(False, None)  # an interrupt between steps: keep the exact state for --resume
            saved_at = step
        bar.close()
        if main:
            print(_interrupt_note(out, last_path, saved_at, step, total, consistent), file=sys.stderr)
        if held.pending is not None:
            held.deliver(held.pending)
        raise
    finally:
        held.restore()
        bar.close()
    D.barrier()
    module.eval()
    return TrainResult(model=module, steps=step, epoch=epoch, final_loss=last_loss, history=history,
                       validation=validation, metrics=metrics, best=best, out=out,
                       last_checkpoint=last_path if out is not None else None,
                       best_checkpoint=best_path if out is not None and best_path.exists() else None)


def _check_compatible(ckpt, module, operator, objective, fingerprint, batch_size, world, seed, path) -> None:
    problems = []
    if hasattr(module, "config") and ckpt["model"].get("config") != module.config():
        problems.append(f"model {ckpt['model'].get('config')} vs now {module.config()}")
    stored_op, now_op = dict(ckpt["operator"]), operator_config(operator)
    for cfg in (stored_op, now_op):
        cfg.pop("backend", None)
        cfg.pop("rebuildable", None)
    if stored_op != now_op:
        problems.append(f"operator {stored_op} vs now {now_op}")
    if ckpt["objective"]["config"] != objective.config():
        problems.append(f"objective {ckpt['objective']['config']} vs now {objective.config()}")
    if ckpt.get("data") != fingerprint:
        problems.append("the training data differ from the checkpoint's (fingerprint mismatch)")
    run = ckpt.get("run", {})
    for key, now in (("batch_size", batch_size), ("world_size", world), ("seed", seed)):
        if run.get(key) != now:
            problems.append(f"{key} {run.get(key)} vs now {now}")
    if problems:
        raise CtrobustError(f"cannot resume from {path}: it belongs to a different run: " + "; ".join(problems)
                            + ". Use the original options, or start afresh with --force or another --out.")
