"""The trainer: :func:`fit` trains any model, operator, objective and dataset (``ctrobust train`` builds them in
:func:`ctrobust.app.run_train`).

See docs/training.md. In short: images ``x`` come from the dataset, the trainer measures ``y = A x``
(no noise, or ``noise(A x)`` with a measurement noise model such as low-dose CT's
:class:`ctrobust.operators.noise.LogPoissonNoise`), the objective returns the loss, Adam takes a step, and the learning rate follows a
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
from ctrobust.operators.noise import measure
from ctrobust.training import distributed as D
from ctrobust.training.checkpoint import (model_payload, operator_config, read_checkpoint, rng_state,
                                          save_checkpoint, set_rng_state)
from ctrobust.models.registry import check_checkpointable, model_config
from ctrobust.training.logs import RunLog, data_fingerprint
from ctrobust.training.objectives import OBJECTIVES, Objective, build_objective

__all__ = ["TrainResult", "fit", "NonFiniteLossError", "SCHEDULERS", "RUN_FILES"]

SCHEDULERS = ("cosine", "step", "constant")
#: Files the trainer writes into ``out`` (``--force`` removes exactly these before a fresh run).
RUN_FILES = ("config.json", "last.pt", "best.pt", "steps.csv", "steps.jsonl", "epochs.csv", "epochs.jsonl",
             "validation.csv", "validation.jsonl")


class NonFiniteLossError(CtrobustError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


def _no_buffer_sync(ddp_class) -> dict:
    """DDP's keyword for "no buffer broadcast before each forward": ``forward_sync_buffers=False`` where torch
    has it (it deprecates ``broadcast_buffers`` with a FutureWarning per rank; it still syncs buffers once at
    init, which the identically seeded replicas need anyway), else ``broadcast_buffers=False``."""
    import inspect

    name = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp_class).parameters else "broadcast_buffers"
    return {name: False}


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
    last validation metrics; ``best`` ``{"step", "criterion", CRITERION: score}`` with criterion ``val_mse``,
    or ``train_loss`` without a validation set (never a training loss under ``val_mse``); ``out``, ``last_checkpoint``, ``best_checkpoint`` paths (None without ``out``).
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


#: the seed of the validation noise (the same noisy validation data at every validation)
_VALIDATION_NOISE_SEED = 7_000_003


def _step_noise_seed(seed: int, step: int) -> int:
    """The measurement-noise seed of one training step (fresh noise every step, reproducible across resumes)."""
    return seed * 1_000_003 + step


#: objectives that differentiate f with respect to its measurement (their adversary follows d f / d y)
INPUT_GRADIENT_OBJECTIVES = ("minmax", "pgd", "universal")


def _check_trainable(module, operator, objective, train_set, device, dtype) -> None:
    """One forward and backward probe on the first training sample before the first step: a model autograd
    cannot differentiate is refused with a message that says what to do (:func:`ctrobust.attacks.check_differentiable`)."""
    from ctrobust.attacks.differentiable import check_differentiable

    if len(train_set) == 0:
        return
    x = _images_of(torch.utils.data.default_collate([train_set[0]])).to(device=device, dtype=dtype)
    y = measure(operator, x.reshape(1, *operator.domain_shape))
    check_differentiable(module, y, label=f"the model ({type(module).__name__})",
                         wrt_input=objective.name in INPUT_GRADIENT_OBJECTIVES, parameters=module.parameters(),
                         purpose=f"{objective.name} training")




def _validate(module, operator, val_set, batch_size, device, dtype, noise=None) -> dict:
    from ctrobust.evaluation import metrics as M

    was_training = module.training
    module.eval()
    image_shape = tuple(operator.image_shape)
    sums: dict[str, float] = {}
    count = 0
    loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, generator=torch.Generator().manual_seed(0))
    for b, batch in enumerate(loader):
        x = _images_of(batch).to(device=device, dtype=dtype)
        x = x.reshape(x.shape[0], *operator.domain_shape)
        # the same validation noise every time, per sample (dataset index): independent of the batch size
        f = module(measure(operator, x, noise, _VALIDATION_NOISE_SEED, range(b * batch_size, b * batch_size + len(x))))
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
    eff, floor = out.get("g_efficiency"), out.get("g_random_efficiency")
    # G is failing when it is hardly stronger than noise of its own size: its loss gain below twice that of a
    # random direction at the same radius (FBP-based nets amplify random noise little: the floor is ~0.01-0.1,
    # while a working G sits at 0.2-0.5 against its moving f and above 0.6 against a frozen one)
    low = eff is not None and floor is not None and not eff > 2 * max(floor, 0.0)
    # warn once per run, when it stays so at two validations in a row
    if low and getattr(objective, "_low_efficiency", False) and not getattr(objective, "_efficiency_warned", False):
        objective._efficiency_warned = True
        print(f"ctrobust: warning: the adversary reaches {eff:.2f} of a per-sample attack's loss gain, hardly more than "
              f"a random perturbation of the same size ({floor:.2f}), at two validations in a row: f is trained "
              "against noise, not an adversary (try a larger --u-step or --adversary-mode memory; see g_efficiency "
              "in validation.csv and docs/training.md)", file=sys.stderr)
    objective._low_efficiency = low
    return out


class _Trainer:
    """One :func:`fit` run, in named parts; its state lives on the instance.

    - :meth:`setup`: options checked, processes and device, model / operator / objective moved there,
      data order, optimiser and schedule; then :meth:`resume` (continue from ``out/last.pt``) or
      :meth:`open_log` on a fresh run folder;
    - :meth:`train_step`: measure ``y = A x``, the objective's loss, one optimiser step;
    - :meth:`validate`: validation metrics plus the objective's own numbers (min-max: ``g_efficiency``);
    - the checkpoint policy: :meth:`after_step` decides when to validate and save (epoch ends, every
      ``val_every`` / ``save_every`` steps), :meth:`save` writes ``last.pt`` and, when the criterion
      improves, ``best.pt``; :meth:`finish` saves the last step, :meth:`interrupted` the state at Ctrl-C;
    - :meth:`run`: the loop, with Ctrl-C / SIGTERM held until a step is complete.
    """

    def __init__(self, model, operator, objective, train_set, val_set, *, epochs, max_steps, batch_size, lr,
                 scheduler, seed, device, out, resume, force, num_workers, val_every, save_every, log_every,
                 progress, callbacks, extra, noise=None):
        self.model, self.operator, self.objective = model, operator, objective
        self.train_set, self.val_set = train_set, val_set
        self.epochs, self.max_steps, self.batch_size, self.lr = epochs, max_steps, batch_size, lr
        self.scheduler, self.seed, self.requested_device, self.out = scheduler, seed, device, out
        self.resume_requested, self.force, self.num_workers = resume, force, num_workers
        self.val_every, self.save_every, self.log_every = val_every, save_every, log_every
        self.progress, self.callbacks, self.extra = progress, callbacks, extra
        self.noise = noise

    # -- setup / resume ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Check the options, place everything on the device, build the optimiser; resume or start a run folder."""
        if isinstance(self.objective, str):
            if self.objective not in OBJECTIVES:
                raise CtrobustError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
            self.objective = build_objective(self.objective, seed=self.seed)
        if self.scheduler not in SCHEDULERS:
            raise CtrobustError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.max_steps is not None and self.max_steps < 0:
            raise CtrobustError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.batch_size < 1:
            raise CtrobustError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.out is not None:  # refuse now what could not be checkpointed after training
            check_checkpointable(self.model)
        self.out = Path(self.out) if self.out is not None else None
        info = D.init_distributed(resolve_device(self.requested_device))
        self.device, self.main, self.world = info.device, info.is_main, info.world_size
        _check_out(self.out, self.resume_requested, self.force)
        D.barrier()  # every process checked ``out`` before process 0 writes into it

        module = self.model.to(self.device)
        if isinstance(self.operator, nn.Module) and any(True for _ in self.operator.buffers()):
            self.operator.to(self.device)  # CS operators keep their matrix as a buffer
        if self.world > 1 and self.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        module.train()
        self.module = module
        self.dtype = next(module.parameters()).dtype
        self.objective.setup(module, self.operator, device=self.device)
        try:
            self.objective.check_dataset(len(self.train_set))
        except ValueError as exc:
            raise CtrobustError(str(exc)) from exc
        _check_trainable(module, self.operator, self.objective, self.train_set, self.device, self.dtype)

        self.rank = info.rank
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.world, rank=info.rank, shuffle=True,
                                          seed=self.seed, drop_last=True)
        self.per_epoch = len(self.sampler) // self.batch_size
        if self.per_epoch == 0:
            raise CtrobustError(f"the training set has {len(self.train_set)} samples, fewer than one global batch "
                                f"({self.batch_size} x {self.world} processes); lower --batch-size or add data")
        if self.max_steps is None and self.epochs is None:
            self.epochs = 10
        self.total = int(self.max_steps) if self.max_steps is not None else int(self.epochs) * self.per_epoch
        self.optimizer = torch.optim.Adam(module.parameters(), lr=self.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(self.scheduler, self.total))
        self.fingerprint = data_fingerprint(self.train_set)
        self.run_record = {"batch_size": self.batch_size, "lr": self.lr, "scheduler": self.scheduler,
                           "seed": self.seed, "world_size": self.world, "total_steps": self.total,
                           **(self.extra or {})}

        self.step, self.epoch, self.in_epoch = 0, 0, 0
        self.metrics: dict = {}
        # the best score is stored under its criterion's name: "val_mse", or "train_loss" without a val set
        criterion = "val_mse" if self.val_set is not None else "train_loss"
        self.best = {"step": None, criterion: None, "criterion": criterion}
        self.last_path = self.out / "last.pt" if self.out is not None else None
        self.best_path = self.out / "best.pt" if self.out is not None else None
        self.resumed = self.resume()
        self.log = self.open_log()
        self.ddp = module
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda"
                                               else None, **_no_buffer_sync(DistributedDataParallel))

    def resume(self) -> bool:
        """With ``resume=True``: restore model, optimiser, schedule, objective, RNGs and progress from ``last.pt``."""
        if self.resume_requested and self.last_path.exists():
            ckpt = read_checkpoint(self.last_path)
            _check_compatible(ckpt, self.module, self.operator, self.objective, self.fingerprint, self.batch_size,
                              self.world, self.seed, self.last_path)
            self.module.load_state_dict(ckpt["model"]["state"], strict=False)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.objective.load_state_dict(ckpt["objective"]["state"])
            set_rng_state(ckpt["rng"])
            self.step, self.epoch, self.in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch_in_epoch"])
            self.metrics, self.best = dict(ckpt.get("metrics") or {}), dict(ckpt.get("best") or self.best)
            return True
        if self.resume_requested and self.main:
            print(f"ctrobust: nothing to resume in {self.out} (no last.pt); starting a new run", file=sys.stderr)
        return False

    def open_log(self) -> RunLog | None:
        """Process 0's run log in ``out``: truncated to the resumed step, or a fresh folder with ``config.json``."""
        if self.out is None or not self.main:
            return None
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        if not self.resumed:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        log = RunLog(out)
        if self.resumed:
            log.truncate(self.step)
        else:
            module = self.module
            log.write_json("config.json", {"model": model_config(module),
                                           "operator": operator_config(self.operator),
                                           "objective": self.objective.to_config(), "data": self.fingerprint,
                                           "run": self.run_record})
        return log

    # -- one step -------------------------------------------------------------------------------------------
    def epoch_loader(self) -> DataLoader:
        """The rest of the current epoch's batches (all of them unless resumed mid-epoch)."""
        self.sampler.set_epoch(self.epoch)
        indices = list(self.sampler)
        bs = self.batch_size
        batches = [indices[i * bs:(i + 1) * bs] for i in range(self.in_epoch, self.per_epoch)]
        self.pending_indices = iter(batches)  # the dataset indices of each batch, in the loader's order
        # an explicit generator: the loader's worker base seed must not come from the global RNG
        return DataLoader(self.train_set, batch_sampler=batches, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))

    def train_step(self, batch) -> tuple[dict, dict]:
        """Measure ``y = A x``, take the objective's loss and one optimiser step; returns ``(logs, row)``."""
        t0 = time.perf_counter()
        device, operator, module = self.device, self.operator, self.module
        x = _images_of(batch).to(device=device, dtype=self.dtype)
        x = x.reshape(x.shape[0], *operator.domain_shape)
        # fresh measurement noise every step; sample i's from (seed, step, its position in the global batch):
        # reproducible across resumes and the same for any split of the global batch over processes
        first = self.rank * x.shape[0]
        y = measure(operator, x, self.noise, _step_noise_seed(self.seed, self.step), range(first, first + x.shape[0]))
        self.objective.observe_batch(next(getattr(self, "pending_indices", iter(())), None))
        loss, logs = self.objective.loss(self.ddp, x, y, module)
        if not D.all_true(bool(torch.isfinite(loss.detach()).all()), device):
            where = (f"{self.last_path} (step {self.saved_at})" if self.out is not None and self.saved_at >= 0
                     else "none was saved yet")
            raise NonFiniteLossError(
                f"the training loss became {float(loss.detach())} at step {self.step + 1} (epoch {self.epoch}); "
                f"training stopped. Last good checkpoint: {where}. Try a lower --lr, check the data, "
                "then continue with --resume.")
        if self.world > 1:  # log the global-batch means, not process 0's share
            keys = sorted(logs)
            mean = D.average_tensor(torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device))
            logs = dict(zip(keys, mean.tolist()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.sched.step()
        self.objective.after_step(module)
        self.step += 1
        self.in_epoch += 1
        self.last_loss = float(logs.get("loss", float(loss.detach())))
        self.running = self.last_loss if self.running is None else 0.9 * self.running + 0.1 * self.last_loss
        self.since_save.append(self.last_loss)
        self.epoch_losses.append(self.last_loss)
        row = {"step": self.step, "epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], **logs,
               "seconds": time.perf_counter() - t0}
        return logs, row

    def record(self, logs: dict, row: dict) -> None:
        """Log the step row (every ``log_every`` steps and the last) and update the progress bar."""
        if self.step % max(self.log_every, 1) == 0 or self.step == self.total:
            self.history.append(row)
            if self.log:
                self.log.append("steps", row)
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "clean", "perturbed")}
                             | {"avg": f"{self.running:.4g}"}
                             | ({"g_eff": f"{self.metrics['g_efficiency']:.2f}"} if "g_efficiency" in self.metrics
                                else {}))

    # -- validation -----------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Validation metrics (process 0, with a validation set) into ``metrics``, the rows and the log."""
        if self.val_set is not None and self.main:
            args = (self.module, self.operator, self.val_set, self.batch_size, self.device, self.dtype)
            self.metrics = _validate(*args, noise=self.noise)
            self.metrics.update(_objective_validation(self.objective, *args))
            row = {"step": self.step, "epochs_done": self.epoch, **self.metrics}
            self.validation.append(row)
            if self.log:
                self.log.append("validation", row)

    # -- checkpoint policy ----------------------------------------------------------------------------------
    def payload(self) -> dict:
        """Everything ``last.pt`` holds (docs in :mod:`ctrobust.training.checkpoint`)."""
        return {
            **model_payload(self.module, self.operator),
            "objective": {"config": self.objective.to_config(), "state": self.objective.state_dict()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.sched.state_dict(), "rng": rng_state(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.in_epoch, "data": self.fingerprint,
            "metrics": self.metrics, "best": self.best, "run": self.run_record,
        }

    def save(self, validated: bool, train_loss: float | None) -> None:
        """Write ``last.pt``; also ``best.pt`` when the criterion (validation MSE, else the training loss since
        the last save) is at least as good as the best so far."""
        if self.out is None or not self.main:
            return
        data = self.payload()
        save_checkpoint(self.last_path, data)
        if validated and "val_mse" in self.metrics:
            score = self.metrics["val_mse"]
        elif self.val_set is None and train_loss is not None:
            score = train_loss
        else:
            return
        criterion = self.best["criterion"]
        if self.best.get(criterion) is None or score <= self.best[criterion] or not self.best_path.exists():
            self.best = {"step": self.step, criterion: float(score), "criterion": criterion}
            data["best"] = self.best
            save_checkpoint(self.best_path, data)

    def after_step(self) -> None:
        """Epoch bookkeeping, then validate / save as the policy says (epoch ends, ``val_every``, ``save_every``)."""
        end_of_epoch = self.in_epoch == self.per_epoch
        if end_of_epoch:
            epoch_row = {"epoch": self.epoch, "step": self.step, "train_loss": float(np.mean(self.epoch_losses))}
            self.epoch += 1
            self.in_epoch = 0
            self.epoch_losses = []
            if self.val_every is None:
                self.validate()
                epoch_row.update(self.metrics)
            if self.log:
                self.log.append("epochs", epoch_row)
        val_every = self.val_every
        validated = (val_every is None and end_of_epoch) or (val_every is not None and self.step % val_every == 0)
        if validated and val_every is not None:
            self.validate()
        if validated or (self.save_every and self.step % self.save_every == 0) or end_of_epoch:
            self.save(validated, float(np.mean(self.since_save)))
            self.since_save, self.saved_at = [], self.step

    def finish(self) -> None:
        """Stopped by ``max_steps`` between checkpoints: validate (unless done) and save the last step."""
        if self.saved_at != self.step:
            if not (self.validation and self.validation[-1]["step"] == self.step):
                self.validate()
            self.save(True, float(np.mean(self.since_save)) if self.since_save else None)
            self.saved_at = self.step

    def interrupted(self, held: "_HeldSignals") -> None:
        """Ctrl-C / SIGTERM: save the exact state between steps for ``--resume``, say what is on disk."""
        if self.consistent and self.saved_at != self.step:
            self.save(False, None)
            self.saved_at = self.step
        self.bar.close()
        if self.main:
            print(_interrupt_note(self.out, self.last_path, self.saved_at, self.step, self.total, self.consistent),
                  file=sys.stderr)
        if held.pending is not None:
            held.deliver(held.pending)

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Set up, train ``total`` steps (or until a callback or signal stops it), return the result."""
        from ctrobust.progress import tqdm  # bars only on a terminal

        self.setup()
        self.bar = tqdm(total=self.total, initial=min(self.step, self.total), desc=f"train {self.objective.name}",
                        unit="step", disable=not (self.progress and self.main and sys.stderr.isatty()),
                        dynamic_ncols=True)
        self.history: list = []
        self.validation: list = []
        self.running: float | None = None
        self.since_save: list = []
        self.epoch_losses: list = []
        self.last_loss = float("nan")
        self.saved_at = self.step if self.resumed else -1
        self.consistent = True
        held = _HeldSignals()  # Ctrl-C / SIGTERM act between steps, after last.pt is saved
        try:
            while self.step < self.total:
                for batch in self.epoch_loader():
                    self.consistent = False
                    logs, row = self.train_step(batch)
                    self.record(logs, row)
                    self.after_step()
                    self.consistent = True
                    for cb in self.callbacks:
                        cb(self.step, logs)
                    if held.pending is not None:
                        raise KeyboardInterrupt
                    if self.step >= self.total:
                        break
            self.finish()
            if held.pending is not None:
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.interrupted(held)
            raise
        finally:
            held.restore()
            self.bar.close()
        D.barrier()
        self.module.eval()
        out = self.out
        return TrainResult(model=self.module, steps=self.step, epoch=self.epoch, final_loss=self.last_loss,
                           history=self.history, validation=self.validation, metrics=self.metrics, best=self.best,
                           out=out, last_checkpoint=self.last_path if out is not None else None,
                           best_checkpoint=self.best_path if out is not None and self.best_path.exists() else None)


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
    noise=None,
) -> TrainResult:
    """Train ``model`` to reconstruct ``x`` from ``y = operator(x)`` with ``objective``.

    Parameters
    ----------
    model : torch.nn.Module
        ``f``: measurements ``(B, *operator.range_shape)`` -> ``(B, *operator.domain_shape)``, e.g.
        FBPConvNet (sinograms ``(B, 1, A, D)`` -> images ``(B, 1, N, N)``), CSResidualNet or
        LinearReconstruction (``(B, m)`` -> ``(B, n)``). With ``out``, it must describe how to rebuild it
        (built by :func:`ctrobust.models.build_model`, or ``to_config()``; docs/models.md), else ``fit``
        refuses it before training.
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
    noise : callable, optional
        Measurement noise ``noise(y, generator)`` (e.g. :class:`ctrobust.operators.noise.LogPoissonNoise`): every
        step trains on ``noise(A x)`` with fresh noise (:func:`ctrobust.operators.noise.measure`, sample i of
        a step seeded by (seed, step, i's position in the global batch)), validation measures with fixed
        noise (seeded per validation sample). The objective's perturbations act on the noisy measurement.

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
    return _Trainer(model, operator, objective, train_set, val_set, epochs=epochs, max_steps=max_steps,
                    batch_size=batch_size, lr=lr, scheduler=scheduler, seed=seed, device=device, out=out,
                    resume=resume, force=force, num_workers=num_workers, val_every=val_every,
                    save_every=save_every, log_every=log_every, progress=progress, callbacks=callbacks,
                    extra=extra, noise=noise).run()


def _check_compatible(ckpt, module, operator, objective, fingerprint, batch_size, world, seed, path) -> None:
    problems = []
    now = model_config(module)
    runtime = tuple(getattr(module, "runtime_options", ()))  # how it is computed, not what: may differ

    def function(config):
        return {k: v for k, v in config.items() if k not in runtime} if isinstance(config, dict) else config

    if now is not None and function(ckpt["model"].get("config")) != function(now):
        problems.append(f"model {ckpt['model'].get('config')} vs now {now}")
    stored_op, now_op = dict(ckpt["operator"]), operator_config(operator)
    for cfg in (stored_op, now_op):
        cfg.pop("backend", None)
        cfg.pop("rebuildable", None)
    if stored_op != now_op:
        problems.append(f"operator {stored_op} vs now {now_op}")
    if ckpt["objective"]["config"] != objective.to_config():
        problems.append(f"objective {ckpt['objective']['config']} vs now {objective.to_config()}")
    if ckpt.get("data") != fingerprint:
        problems.append("the training data differ from the checkpoint's (fingerprint mismatch)")
    run = ckpt.get("run", {})
    for key, now in (("batch_size", batch_size), ("world_size", world), ("seed", seed)):
        if run.get(key) != now:
            problems.append(f"{key} {run.get(key)} vs now {now}")
    if problems:
        raise CtrobustError(f"cannot resume from {path}: it belongs to a different run: " + "; ".join(problems)
                            + ". Use the original options, or start afresh with force=True or another output folder.")
