"""Learned Primal-Dual (Adler & Oktem 2018, "Learned Primal-Dual Reconstruction", IEEE TMI 37(6)).

A fixed number of unrolled primal-dual iterations with the exact operator inside the network:

.. code-block:: text

    f_0 = [x0] * primal_memory,  h_0 = 0 (dual_memory channels),   x0 = 0 (paper) or FBP / A^+ y
    for i = 1 .. iterations:
        h_i = h_{i-1} + Gamma_i([h_{i-1}, K f_{i-1}[1], g])          (dual block, measurement space)
        f_i = f_{i-1} + Lambda_i([f_{i-1}, K^T h_i[0]])                (primal block, image space)
    return f_I[0]

with ``K = A / s`` and ``g = y / s``: the operator and the data are divided by one fixed number ``s``
(``scale``; default the operator norm ``||A||_2`` by power iteration, as the authors normalise their
ray transform), so the blocks see inputs of order one whatever the geometry's units. The primal
channel 1 is projected and the dual channel 0 back-projected (the authors' indexing; with memory 1 both
are channel 0). Each block is three convolutions of width ``channels``, PReLU after the first two, no
normalisation layers; blocks are not shared between iterations. Paper defaults: 10 iterations, primal and
dual memory 5, 32 channels, 3 x 3 kernels, zero start.

Shapes: measurements ``(B, *operator.range_shape)`` (sinograms ``(B, 1, A, D)``, CS ``(B, m)``) ->
``(B, *operator.domain_shape)`` (images ``(B, 1, N, N)``, CS ``(B, n)``). Primal tensors are
``(B, primal_memory, *operator.image_shape)``; dual ones ``(B, dual_memory, A, D)`` for sinograms and
``(B, dual_memory, m)`` for measurement vectors. A CS measurement vector has no neighbourhood (entry
``i`` and ``i + 1`` of a Gaussian or randomly subsampled DCT measurement are unrelated), so the dual
blocks on vectors are 1-D convolutions with kernel 1 by default: a per-measurement MLP across the
memory channels, the same weights for every entry (``dual_kernel`` changes it).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ctrobust.models.unet import _in_dtype_of, seeded

__all__ = ["LearnedPrimalDual", "LPD_INITS"]

#: Initial primal iterates: zeros (the paper) or the operator's own inverse (FBP for CT, ``A^+`` for CS).
LPD_INITS = ("zero", "fbp")


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(1, A, D) -> (A, D)``; ``(m,) -> (m,)``: the measurement shape without its channel axis."""
    return shape[1:] if len(shape) == 3 and shape[0] == 1 else shape


def _block(cin: int, cout: int, channels: int, dims: int, kernel: int) -> nn.Sequential:
    """``conv -> PReLU -> conv -> PReLU -> conv``; ``dims``-dimensional, 'same' padding, biases, no norm."""
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    pad = kernel // 2
    return nn.Sequential(conv(cin, channels, kernel, padding=pad), nn.PReLU(channels, init=0.0),
                         conv(channels, channels, kernel, padding=pad), nn.PReLU(channels, init=0.0),
                         conv(channels, cout, kernel, padding=pad))


def _positive_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"LearnedPrimalDual: {name} must be an integer >= {low}, got {value!r}")
    return value


class LearnedPrimalDual(nn.Module):
    """Learned Primal-Dual: measurements ``(B, *range_shape)`` -> images ``(B, *domain_shape)``.

    Parameters
    ----------
    operator : LinearOperator
        The forward operator ``A`` (parallel or fan beam :class:`~ctrobust.operators.radon.RadonTransform`,
        a CS operator, any operator whose ``image_shape`` is 1-D or 2-D). Held as the submodule
        ``.operator``; ``A(x)`` and ``A.adjoint(h)`` run inside every iteration, so gradients of any loss
        reach ``y`` through the exact adjoint. Not part of ``state_dict()``.
    iterations : int
        Unrolled iterations (paper: 10); each applies ``A`` once and ``A^T`` once.
    primal_memory, dual_memory : int
        Channels carried between iterations in image and measurement space (paper: 5 and 5).
    channels : int
        Width of the two hidden convolutions of every block (paper: 32).
    kernel : int
        Odd kernel size of the primal blocks and of the dual blocks on sinograms (paper: 3).
    dual_kernel : int, optional
        Kernel of the dual blocks; default ``kernel`` on sinograms, 1 on measurement vectors (see the module).
    init : {"zero", "fbp"}
        Initial primal iterate: zeros (paper) or ``operator.pinv(y)`` (FBP with the ram-lak filter for CT,
        the pseudo-inverse for CS) in every primal channel.
    scale : float, optional
        ``s`` in ``K = A / s``, ``g = y / s``; default ``operator.norm()`` (power iteration, seeded). Stored
        in :meth:`config`, so a rebuilt network uses the same number.
    zero_init : bool
        Start the last convolution of every block at zero: the untrained network then returns its initial
        iterate exactly (zeros or FBP). Default ``False`` (the paper: Xavier initialisation everywhere).
    seed : int, optional
        Seed of the initial weights (the global RNG is left untouched).
    checkpointing : bool
        Gradient checkpointing of the unrolled iterations (``torch.utils.checkpoint``): a pass that
        differentiates (training, the attack) keeps only each iteration's input and recomputes its
        activations during the backward pass, for about one more forward pass of time. Memory of the
        activations falls from all ``iterations`` blocks' to one block's (a training step at batch 8, peak
        of the process: 2.9 -> 0.9 GiB at 128 px, 6.0 -> 1.8 GiB at 256 px, 5.3 GiB at 512 px where the
        plain network does not fit 16 GiB; 1.2-1.5x the time; docs/performance.md). The function, its
        gradients and its weights are the same either way; default ``False``.
        Recorded in :meth:`config` only when on, and not part of what a resumed run must match
        (:attr:`runtime_options`).
    """

    #: :meth:`config` keys that change how the network is computed, not what it computes: a run may be resumed
    #: or a checkpoint loaded with another value
    runtime_options = ("checkpointing",)

    def __init__(self, operator, iterations: int = 10, primal_memory: int = 5, dual_memory: int = 5,
                 channels: int = 32, *, kernel: int = 3, dual_kernel: int | None = None, init: str = "zero",
                 scale: float | None = None, zero_init: bool = False, seed: int | None = None,
                 checkpointing: bool = False):
        super().__init__()
        if not isinstance(checkpointing, bool):
            raise ValueError(f"LearnedPrimalDual: checkpointing must be true or false, got {checkpointing!r}")
        _positive_int("iterations", iterations)
        _positive_int("primal_memory", primal_memory)
        _positive_int("dual_memory", dual_memory)
        _positive_int("channels", channels)
        if _positive_int("kernel", kernel) % 2 == 0:
            raise ValueError(f"LearnedPrimalDual: kernel must be odd, got {kernel}")
        if init not in LPD_INITS:
            raise ValueError(f"LearnedPrimalDual: init must be one of {LPD_INITS}, got {init!r}")
        if init == "fbp" and not operator.has_pinv:
            raise TypeError(f"LearnedPrimalDual: init='fbp' needs operator.pinv(), which {type(operator).__name__} lacks")
        image = tuple(int(s) for s in operator.image_shape)
        if math.prod(image) != math.prod(operator.domain_shape) or len(image) not in (1, 2):
            raise ValueError(f"LearnedPrimalDual: operator.image_shape {image} must be 1-D or 2-D with "
                             f"{math.prod(operator.domain_shape)} entries")
        dual = _spatial(tuple(int(s) for s in operator.range_shape))
        if len(dual) not in (1, 2):
            raise ValueError(f"LearnedPrimalDual: measurements must be (1, A, D) or (m,), got {operator.range_shape}")
        if dual_kernel is None:
            dual_kernel = kernel if len(dual) == 2 else 1
        if _positive_int("dual_kernel", dual_kernel) % 2 == 0:
            raise ValueError(f"LearnedPrimalDual: dual_kernel must be odd, got {dual_kernel}")
        if scale is None:
            scale = operator.norm(iterations=50)
        scale = float(scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"LearnedPrimalDual: scale must be a positive number, got {scale!r}")

        self.operator = operator
        self.iterations, self.primal_memory, self.dual_memory, self.channels = iterations, primal_memory, dual_memory, channels
        self.kernel, self.dual_kernel, self.init, self.scale, self.zero_init = kernel, dual_kernel, init, scale, zero_init
        self.image_shape, self.dual_shape = image, dual
        self.checkpointing = checkpointing
        with seeded(seed):
            self.dual_blocks = nn.ModuleList(_block(dual_memory + 2, dual_memory, channels, len(dual), dual_kernel)
                                             for _ in range(iterations))
            self.primal_blocks = nn.ModuleList(_block(primal_memory + 1, primal_memory, channels, len(image), kernel)
                                               for _ in range(iterations))
            for block in (*self.dual_blocks, *self.primal_blocks):
                for layer in block:
                    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
                        nn.init.xavier_uniform_(layer.weight)
                        nn.init.zeros_(layer.bias)
                if zero_init:
                    nn.init.zeros_(block[-1].weight)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        """``operator.range_shape``: ``(1, A, D)`` for CT, ``(m,)`` for CS."""
        return tuple(self.operator.range_shape)

    def config(self) -> dict:
        """JSON-able arguments ``{"type": "lpd", ...}``; ``build_model(config, operator)`` rebuilds the network."""
        config = {"type": "lpd", "iterations": self.iterations, "primal_memory": self.primal_memory,
                  "dual_memory": self.dual_memory, "channels": self.channels, "kernel": self.kernel,
                  "dual_kernel": self.dual_kernel, "init": self.init, "scale": self.scale, "zero_init": self.zero_init}
        if self.checkpointing:  # absent when off: configs written before the option existed stay equal
            config["checkpointing"] = True
        return config

    to_config = config

    @classmethod
    def from_config(cls, config: dict, operator, *, seed: int | None = None) -> "LearnedPrimalDual":
        """Inverse of :meth:`config` (weights come from a state dict)."""
        cfg = {k: v for k, v in config.items() if k != "type"}
        return cls(operator, **cfg, seed=seed)

    # -- the unrolled iterations ------------------------------------------------------------------------
    def initial(self, y: torch.Tensor) -> torch.Tensor:
        """The initial primal iterate ``(B, *domain_shape)``: zeros or ``operator.pinv(y)``."""
        if self.init == "fbp":
            return self.operator.pinv(y)
        return y.new_zeros((y.shape[0], *self.operator.domain_shape))

    def _project(self, f: torch.Tensor) -> torch.Tensor:
        """``K f``: primal channel ``(B, *image_shape)`` -> ``(B, 1, *dual_shape)``."""
        out = self.operator(f.reshape(f.shape[0], *self.operator.domain_shape)) / self.scale
        return out.reshape(f.shape[0], 1, *self.dual_shape)

    def _backproject(self, h: torch.Tensor) -> torch.Tensor:
        """``K^T h``: dual channel ``(B, *dual_shape)`` -> ``(B, 1, *image_shape)``."""
        out = self.operator.adjoint(h.reshape(h.shape[0], *self.operator.range_shape)) / self.scale
        return out.reshape(h.shape[0], 1, *self.image_shape)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Reconstruct a batch (in the network's dtype; a float64 ``y`` into a float32 network is converted)."""
        y = _in_dtype_of(self, y)
        b = y.shape[0]
        g = y.reshape(b, 1, *self.dual_shape) / self.scale
        x0 = self.initial(y).reshape(b, 1, *self.image_shape)
        f = x0.expand(b, self.primal_memory, *self.image_shape)
        h = y.new_zeros((b, self.dual_memory, *self.dual_shape))
        recompute = self.checkpointing and torch.is_grad_enabled()
        for i in range(self.iterations):
            if recompute:  # keep (f, h) only; the block's activations are recomputed in the backward pass
                f, h = checkpoint(self._iteration, i, f, h, g, use_reentrant=False)
            else:
                f, h = self._iteration(i, f, h, g)
        return f[:, 0].reshape(b, *self.operator.domain_shape)

    def _iteration(self, i: int, f: torch.Tensor, h: torch.Tensor, g: torch.Tensor):
        """Iteration ``i``: the dual update, then the primal one; returns ``(f_i, h_i)``."""
        lifted = 1 if self.primal_memory > 1 else 0  # the authors project primal channel 1, back-project dual 0
        h = h + self.dual_blocks[i](torch.cat([h, self._project(f[:, lifted]), g], dim=1))
        f = f + self.primal_blocks[i](torch.cat([f, self._backproject(h[:, 0])], dim=1))
        return f, h
