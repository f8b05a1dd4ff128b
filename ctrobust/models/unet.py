"""The U-Net of Jin et al. (2017), with width and depth options so tests can use a tiny one.

Each level is two ``3x3 conv -> norm -> ReLU`` blocks; going down is a 2x2 max-pool, going up a 2x2
transposed convolution followed by concatenation with the skip connection of the same level; a final
``1x1`` convolution maps to the output channels. ``channels=64, depth=4`` is the published network
(64, 128, 256, 512 channels on the way down, 1024 at the bottom).

Sizes that are not a multiple of ``2**depth`` are handled by replicate-padding the input up to the next
multiple and cropping the output back, so any ``N x M`` works (e.g. 37 x 37).

The same class builds the 1-D variant (``dims=1``) used on vectorised compressed-sensing signals whose
``image_shape`` is one-dimensional.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "seeded", "NORMS"]

NORMS = ("batch", "group", "none")


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run the block with the global torch RNG seeded to ``seed`` and restore it afterwards.

    Lets model constructors draw a deterministic initialisation without changing the caller's
    global random state. ``seed=None`` does nothing (torch's default initialisation from the global RNG).
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _in_dtype_of(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``t`` in the floating dtype of ``module``'s parameters (differentiable; unchanged if it already is)."""
    p = next(module.parameters(), None)
    return t if p is None or t.dtype == p.dtype else t.to(p.dtype)


def _layers(dims: int):
    if dims == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d
    if dims == 1:
        return nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d, nn.BatchNorm1d
    raise ValueError(f"dims must be 1 or 2, got {dims!r}")


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return _layers(dims)[3](channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str, dims: int):
        conv = _layers(dims)[0]
        bias = norm == "none"
        super().__init__(
            conv(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout, dims), nn.ReLU(inplace=True),
            conv(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout, dims), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net ``(B, in_channels, N, M) -> (B, out_channels, N, M)`` (or ``(B, C, L)`` with ``dims=1``).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and the output.
    channels : int
        Channels of the first level; level ``i`` has ``channels * 2**i`` (Jin et al.: 64).
    depth : int
        Number of poolings (Jin et al.: 4). ``depth=0`` is a plain two-block CNN.
    norm : {"batch", "group", "none"}
        Normalisation after each convolution (Jin et al.: batch norm). ``"none"`` adds conv biases.
    dims : {1, 2}
        Spatial dimensions.
    seed : int, optional
        Seed for the initial weights (the global RNG is left untouched); ``None`` uses torch's default.
    zero_head : bool
        Initialise the final 1x1 convolution to zero, so the network starts as the zero map. The
        residual models (FBPConvNet, CSResidualNet) use it: ``x0 + U(x0)`` then starts exactly at
        ``x0`` (FBP, ``A^T y`` or ``A^+ y``) and training moves away from it only where that helps.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 64,
        depth: int = 4,
        *,
        norm: str = "batch",
        dims: int = 2,
        seed: int | None = None,
        zero_head: bool = False,
    ):
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("channels", channels, 1), ("depth", depth, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        conv, up, pool, _ = _layers(dims)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.channels, self.depth, self.norm, self.dims = channels, depth, norm, dims
        with seeded(seed):
            widths = [channels * 2**i for i in range(depth + 1)]
            self.down = nn.ModuleList()
            cin = in_channels
            for w in widths:
                self.down.append(_DoubleConv(cin, w, norm, dims))
                cin = w
            self.pool = pool(2)
            self.up = nn.ModuleList()
            self.merge = nn.ModuleList()
            for w in reversed(widths[:-1]):
                self.up.append(up(2 * w, w, 2, stride=2))
                self.merge.append(_DoubleConv(2 * w, w, norm, dims))
            self.head = conv(widths[0], out_channels, 1)
            if zero_head:  # the network starts as the zero map (a residual branch starts as identity)
                nn.init.zeros_(self.head.weight)
                nn.init.zeros_(self.head.bias)

    def to_config(self) -> dict:
        """JSON-able constructor arguments (``UNet(**config_without_type)`` rebuilds it)."""
        return {"type": "UNet", "in_channels": self.in_channels, "out_channels": self.out_channels,
                "channels": self.channels, "depth": self.depth, "norm": self.norm, "dims": self.dims}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(x.shape[2:])
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            want = "(B, C, N, M)" if self.dims == 2 else "(B, C, L)"
            raise ValueError(f"UNet expects {want} with C={self.in_channels}, got {tuple(x.shape)}")
        multiple = 2**self.depth
        pad = []
        for s in reversed(spatial):  # F.pad takes the last dimension first
            extra = (-s) % multiple
            pad += [extra // 2, extra - extra // 2]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        x = self.head(x)
        if any(pad):
            index = [slice(None), slice(None)]
            for d, s in enumerate(spatial):
                before = pad[2 * (len(spatial) - 1 - d)]
                index.append(slice(before, before + s))
            x = x[tuple(index)]
        return x
