"""Several processes with torch DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc_per_node=K`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group (``gloo`` on CPU,
``nccl`` on CUDA, one GPU per process: ``cuda:LOCAL_RANK``). Without those variables (or with
``WORLD_SIZE=1``) everything runs in one process and the helpers below are no-ops.
"""

from __future__ import annotations

import atexit
import dataclasses
import os

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "is_distributed", "rank", "world_size", "barrier",
           "average_gradients", "share_rows", "all_true"]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` in ``[0, world_size)``, ``local_rank`` on this host, ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by the environment (if any) and pick this process's device.

    ``device`` is the device asked for (``cpu`` or ``cuda``); under several processes a CUDA run uses
    ``cuda:LOCAL_RANK``. An already-initialised process group (e.g. set up by the caller) is reused.
    """
    device = torch.device(device)
    ws = _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        ws = dist.get_world_size()
    elif ws > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        atexit.register(_destroy_process_group)  # ours to close: a gloo group left open can abort at exit
    if ws > 1 and device.type == "cuda":
        device = torch.device("cuda", local)
    return DistInfo(rank=rank(), world_size=world_size(), local_rank=local if ws > 1 else 0, device=device)


def _destroy_process_group() -> None:
    """Close the process group this module opened, before the interpreter exits (gloo's threads otherwise
    may end the process with "terminate called without an active exception", exit code -6)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def average_gradients(tensors) -> None:
    """Average the ``.grad`` of each tensor over the processes (in place); no-op in one process."""
    if not is_distributed():
        return
    n = dist.get_world_size()
    for t in tensors:
        if t.grad is not None:
            dist.all_reduce(t.grad, op=dist.ReduceOp.SUM)
            t.grad /= n


def average_tensor(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the processes (a new tensor); ``t`` itself in one process."""
    if not is_distributed():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def share_rows(keys: torch.Tensor, rows: torch.Tensor, total: torch.Tensor):
    """Every process's ``keys`` ``(B,)`` and ``rows`` ``(B, ...)`` concatenated in rank order, and the sum of
    ``total`` over the processes (the per-sample state of objectives such as the memory adversary); the
    arguments themselves in one process. ``B`` must be the same in every process (the sampler drops the
    last incomplete batch)."""
    if not is_distributed():
        return keys, rows, total
    n = dist.get_world_size()
    all_keys = [torch.empty_like(keys) for _ in range(n)]
    all_rows = [torch.empty_like(rows) for _ in range(n)]
    dist.all_gather(all_keys, keys.contiguous())
    dist.all_gather(all_rows, rows.contiguous())
    total = total.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return torch.cat(all_keys), torch.cat(all_rows), total


def all_true(flag: bool, device="cpu") -> bool:
    """True when ``flag`` is true in every process."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())
