"""The auxiliary adversary G of the min-max objective (the l2-ball helpers live in :mod:`ctrobust.attacks.ball`).

``eps`` is relative by default: the perturbation of a measurement ``y_b`` may have l2 norm at most
``eps * ||y_b||_2`` (``eps=0.01`` is 1 % of the sinogram's norm); with ``relative=False`` the radius is
``eps`` itself, in the units of ``y``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ctrobust.models.unet import seeded
from ctrobust.attacks.ball import _per_sample, eps_radius, project_l2_ball

__all__ = ["Adversary", "MODES", "DIRECTION_MODES", "MEMORY_LIMIT_BYTES"]

#: ``shared`` and ``conditioned`` always spend the whole budget and follow f by normalised ascent on a
#: shared direction ``u`` (the working design, default); the others are the CNN-only designs kept
#: for comparison (docs/training.md has the efficiency of each).
MODES = ("shared", "memory", "conditioned", "project", "sphere", "penalty")
DIRECTION_MODES = ("shared", "memory", "conditioned")

#: The most RAM the ``memory`` design may keep for its per-sample directions (also written into every
#: checkpoint): 4 GiB, e.g. 256 phantoms of a 1000-view, 513-bin LoDoPaB-like scan need 0.5 GiB, the whole
#: LoDoPaB-CT training set (35 820 slices) 68 GiB.
MEMORY_LIMIT_BYTES = 4 * 2**30


class Adversary(nn.Module):
    """G: a measurement ``y`` -> a perturbation ``delta`` shaped like ``y``, with ``||delta_b|| <= radius_b``.

    ``radius_b = eps * ||y_b||_2`` (relative, default) or ``eps``. Six designs (``mode``):

    - ``"shared"`` (default): ``G(y) = r(y) u / ||u||`` with ``u`` one learned direction of
      measurement space shared by all samples, moved by normalised ascent steps
      (:meth:`ascend_direction`, ``u <- (u + s g_u / ||g_u||)`` renormalised) with the gradient that
      f's own backward pass leaves on ``u`` — no separate ascent pass, and G keeps up with f.
      Worst-case sinogram perturbations of FBP-based networks share their subspace (the upper
      detector frequencies FBP's ramp filter amplifies), so one direction reaches 0.79-0.92 of a
      20-step per-sample attack's loss gain against a frozen f (docs/training.md); a moving f escapes it.
    - ``"memory"``: a direction per training sample, ``G(y_i) = r(y_i) d_i / ||d_i||``, carried across
      epochs (Zheng et al., CVPR 2020: adversarial perturbations transfer between epochs) and advanced by
      one normalised ascent step per visit with the gradient f's own backward leaves on it
      (:meth:`ascend_memory`): sample-specific at the cost of ``"shared"``. A sample's first visit starts
      from the shared direction ``u``, which keeps learning from the batch's summed gradient, so a new
      sample starts where the batch's common worst case is. The trainer names the batch's dataset indices
      (:meth:`select`); without a selection (validation, other data) G falls back to ``u``.
    - ``"conditioned"``: ``G(y) = r(y) normalize(u + h(y))``, the paper's y-dependent G: ``h`` a CNN
      (MLP for CS vectors) on the RMS-normalised ``y`` whose last layer starts at zero, so G starts
      as ``"shared"``; ``h`` is trained by Adam on the ascent gradient.
    - ``"project"``, ``"sphere"``, ``"penalty"``: the CNN alone, ``delta = radius g / sqrt(d)`` with
      ``g`` its raw output, then projected onto the ball (``project``), rescaled onto the sphere
      (``sphere``), or returned as is with :meth:`penalty` added to G's loss (``penalty``). Trained
      by Adam ascent passes of their own, they fall behind f (efficiency 0.18-0.51).

    Parameters
    ----------
    measurement_shape : sequence of int
        ``(1, A, D)`` for sinograms (``h`` a small 2-D CNN) or ``(m,)`` for CS vectors (an MLP).
    eps : float
        Ball radius, relative to ``||y||`` (default) or absolute.
    relative : bool
        Relative or absolute ``eps``.
    channels : int
        CNN width (sinograms); the MLP's hidden width is ``hidden`` (default ``8 * channels``).
    layers : int
        Number of hidden layers (CNN: 3x3 conv + ReLU blocks; MLP: linear + ReLU).
    mode : {"shared", "conditioned", "project", "sphere", "penalty"}
        The design (above).
    seed : int, optional
        Seed of the initial weights and direction (the global RNG is left untouched).
    """

    def __init__(self, measurement_shape: Sequence[int], eps: float, relative: bool = True, channels: int = 16, *,
                 layers: int = 2, hidden: int | None = None, mode: str = "shared", seed: int | None = None):
        super().__init__()
        shape = tuple(int(s) for s in measurement_shape)
        if len(shape) not in (1, 3) or (len(shape) == 3 and shape[0] != 1):
            raise ValueError(f"measurement_shape must be (1, A, D) or (m,), got {shape}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        eps_radius(torch.zeros(1, 1), eps, relative)  # validates eps
        self.measurement_shape, self.eps, self.relative, self.mode = shape, float(eps), bool(relative), mode
        self.channels, self.layers = int(channels), int(layers)
        self.hidden = int(hidden) if hidden is not None else 8 * self.channels
        with seeded(seed):
            if len(shape) == 3:
                mods: list[nn.Module] = [nn.Conv2d(1, self.channels, 3, padding=1), nn.ReLU()]
                for _ in range(self.layers - 1):
                    mods += [nn.Conv2d(self.channels, self.channels, 3, padding=1), nn.ReLU()]
                mods.append(nn.Conv2d(self.channels, 1, 3, padding=1))
            else:
                mods = [nn.Linear(shape[0], self.hidden), nn.ReLU()]
                for _ in range(self.layers - 1):
                    mods += [nn.Linear(self.hidden, self.hidden), nn.ReLU()]
                mods.append(nn.Linear(self.hidden, shape[0]))
            self.net = nn.Sequential(*mods)
            if mode in DIRECTION_MODES:
                u = torch.randn((1, *shape), dtype=torch.float64)
                self.u = nn.Parameter((u / u.norm()).to(torch.get_default_dtype()))
            else:
                self.register_parameter("u", None)
        self.memory: dict[int, torch.Tensor] = {}  # "memory": sample index -> direction (CPU, unit norm)
        self._selected: list[int] | None = None
        self._active: torch.Tensor | None = None
        if mode in ("shared", "memory"):
            self.net = None  # G is a direction (shared, or one per sample) alone
        elif mode == "conditioned":
            last = self.net[-1]
            nn.init.zeros_(last.weight)  # h starts at 0: G starts as the shared direction
            nn.init.zeros_(last.bias)

    def to_config(self) -> dict:
        """JSON-able constructor arguments."""
        return {"type": "Adversary", "measurement_shape": list(self.measurement_shape), "eps": self.eps,
                "relative": self.relative, "channels": self.channels, "layers": self.layers,
                "hidden": self.hidden, "mode": self.mode}

    def radius(self, y: torch.Tensor) -> torch.Tensor:
        """``(B,)`` ball radius for ``y``."""
        return eps_radius(y, self.eps, self.relative)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, *measurement_shape) -> (B, *measurement_shape)`` perturbation."""
        if tuple(y.shape[1:]) != self.measurement_shape:
            raise ValueError(f"Adversary expects (B, {', '.join(map(str, self.measurement_shape))}), got {tuple(y.shape)}")
        b = y.shape[0]
        d = math.prod(self.measurement_shape)
        view = (b, *([1] * (y.dim() - 1)))
        radius = self.radius(y)
        if self.mode == "memory" and self._selected is not None:
            if len(self._selected) != b:
                raise ValueError(f"{len(self._selected)} sample indices selected for a batch of {b}")
            if self._active is None or self._active.device != y.device or self._active.dtype != y.dtype:
                self._active = self.recall(self._selected, device=y.device, dtype=y.dtype).requires_grad_(True)
            norm = self._active.flatten(1).norm(dim=1).clamp_min(torch.finfo(y.dtype).tiny)
            return self._active * (radius / norm).reshape(view)
        if self.mode in DIRECTION_MODES:
            v = self.u.to(y.dtype).expand(b, *self.measurement_shape)
            if self.net is not None:
                rms = (y.detach().flatten(1).norm(dim=1) / math.sqrt(d)).clamp_min(torch.finfo(y.dtype).tiny)
                v = v + self.net(y / rms.reshape(view)) / math.sqrt(d)  # an RMS-1 output has the norm of u
            norm = v.flatten(1).norm(dim=1).clamp_min(torch.finfo(y.dtype).tiny)
            return v * (radius / norm).reshape(view)
        rms = (y.detach().flatten(1).norm(dim=1) / math.sqrt(d)).clamp_min(torch.finfo(y.dtype).tiny)
        g = self.net(y / rms.reshape(view))
        delta = g * (radius / math.sqrt(d)).reshape(view)
        if self.mode == "project":
            delta = project_l2_ball(delta, radius)
        elif self.mode == "sphere":
            norm = delta.flatten(1).norm(dim=1).clamp_min(torch.finfo(delta.dtype).tiny)
            delta = delta * (radius / norm).reshape(view)
        return delta

    # -- "memory": one direction per training sample -------------------------------------------------------
    def select(self, indices) -> None:
        """Name the dataset indices of the next batch (``None``: no batch, G falls back to ``u``)."""
        self._selected = None if indices is None else [int(i) for i in indices]
        self._active = None

    @torch.no_grad()
    def recall(self, indices, *, device=None, dtype=None) -> torch.Tensor:
        """The stored directions of ``indices``, ``(B, *measurement_shape)``; a sample never seen starts at ``u``."""
        u = self.u.detach().to("cpu", torch.float32)[0]
        rows = [self.memory.get(int(i), u) for i in indices]
        return torch.stack(rows).to(device=device or self.u.device, dtype=dtype or self.u.dtype)

    @torch.no_grad()
    def ascend_memory(self, step: float, share=None) -> float:
        """Normalised ascent of each selected sample's direction with the gradient f's backward left on it:
        ``d_i <- (d_i + step g_i / ||g_i||)`` renormalised, stored back; the shared ``u`` (the start of
        unseen samples) takes the same kind of step on the batch's summed gradient. Clears the selection's
        gradient; returns the mean per-sample gradient norm. A zero gradient leaves a direction unchanged.

        ``share(indices, directions, gradient_sum) -> (indices, directions, gradient_sum)`` (several
        processes: the trainer's all-gather of every process's batch, so that each process stores every
        sample's newest direction and ``u`` steps on the global batch's gradient); default: this batch."""
        if self.mode != "memory":
            raise RuntimeError(f"mode {self.mode!r} keeps no per-sample directions")
        active, indices = self._active, self._selected
        self._active = None
        if active is None or active.grad is None or indices is None:
            return 0.0
        g = active.grad
        gnorm = g.flatten(1).norm(dim=1)
        ok = torch.isfinite(gnorm) & (gnorm > 0)
        scale = torch.where(ok, step / gnorm.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(gnorm))
        d = active.detach() + g * _per_sample(scale, g)
        d = d / _per_sample(d.flatten(1).norm(dim=1).clamp_min(torch.finfo(d.dtype).tiny), d)
        keys, gsum = torch.tensor(indices, dtype=torch.int64, device=d.device), g.sum(0, keepdim=True)
        if share is not None:
            keys, d, gsum = share(keys, d, gsum)
        for i, row in zip(keys.tolist(), d.to("cpu", torch.float32)):
            self.memory[int(i)] = row.clone()
        self.u.grad = gsum.to(self.u.dtype)
        self.ascend_direction(step)
        return float(gnorm[ok].mean()) if bool(ok.any()) else 0.0

    def memory_bytes(self, n_samples: int) -> int:
        """Bytes the per-sample directions of ``n_samples`` training samples take (float32)."""
        return int(n_samples) * math.prod(self.measurement_shape) * 4

    def memory_state(self) -> dict:
        """The per-sample directions as plain tensors (``weights_only``-loadable): sorted indices and rows."""
        keys = sorted(self.memory)
        rows = torch.stack([self.memory[k] for k in keys]) if keys else torch.zeros(0, *self.measurement_shape)
        return {"indices": torch.tensor(keys, dtype=torch.int64), "directions": rows}

    def load_memory_state(self, state: dict) -> None:
        self.memory = {int(i): row.clone() for i, row in zip(state["indices"].tolist(), state["directions"])}

    @torch.no_grad()
    def ascend_direction(self, step: float) -> float:
        """Normalised ascent on the shared direction with the gradient in ``u.grad``:
        ``u <- (u + step * g / ||g||) / ||u + step * g / ||g||||``; clears ``u.grad``. Returns ``||g||``.

        ``u.grad`` must hold the gradient of the objective G *maximises* (the trainer's backward pass
        of f's loss leaves exactly that on ``u``). A zero or missing gradient leaves ``u`` unchanged.
        """
        if self.u is None:
            raise RuntimeError(f"mode {self.mode!r} has no shared direction")
        g = self.u.grad
        self.u.grad = None
        if g is None:
            return 0.0
        gnorm = float(g.norm())
        if not math.isfinite(gnorm) or gnorm == 0.0:
            return gnorm
        u = self.u + step * g / gnorm
        self.u.copy_(u / u.norm())
        return gnorm

    def penalty(self, delta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample ``relu(||delta_b|| / radius_b - 1)^2``, shape ``(B,)`` (0 inside the ball)."""
        radius = self.radius(y).clamp_min(torch.finfo(delta.dtype).tiny)
        return torch.relu(delta.flatten(1).norm(dim=1) / radius - 1.0) ** 2
