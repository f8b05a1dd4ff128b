"""Fan-beam filtered backprojection: weighted FBP with a distance-weighted backprojection matrix.

The design (docs/conventions.md, "Fan-beam FBP"): for a flat detector, with ``R = source_origin``, the
magnification ``M`` and the bin centres ``u_j`` rescaled to the virtual detector through the rotation
axis (``s_j = u_j / M``, spacing ``ds = detector_spacing / M``),

``fbp(y) = (angle_range / A) / ds * B (h * (w o y))``

* ``w[i, j] = c_j * r_ij``: the cosine pre-weight ``c_j = R / sqrt(R^2 + s_j^2)`` times the redundancy
  weight ``r_ij`` (1/2 for a full ``2 pi`` scan, where every ray is measured twice; Parker's weights
  for a short scan ``pi + 2 Delta``, ``Delta >=`` the fan angle);
* ``h``: the same windowed Kak-Slaney ramp as parallel beam (:mod:`ctrobust.operators.filters`),
  along the detector;
* ``B``: the distance-weighted backprojection, a sparse matrix with **the sparsity of ASTRA's** ``A^T``:
  entry ``(pixel p, ray (i, j))`` is ``a_{(i,j),p} / (U_ip^2 * sum_j' a_{(i,j'),p})``. Dividing by the
  per-view sum turns ASTRA's ray-driven weights into interpolation weights (summing to 1 per pixel
  and view: the filtered projection is read at the pixel's detector position), and
  ``U_ip = (R + p . d_i) / R`` is the pixel's depth along the central ray ``d_i`` over ``R``, the
  ``1 / U^2`` weight of fan-beam backprojection (Kak & Slaney, sec. 3.4.2).

``B`` and ``B^T`` are stored as value arrays that share ASTRA's ``A^T`` / ``A`` index tensors
(:func:`ctrobust.operators.astra_backend.torch_matrices`), so FBP costs the memory of one extra set of
values per matrix, and :class:`FanBackprojection` is a :class:`LinearOperator` whose adjoint is the
exact transpose: FBP is linear and its backward is its exact adjoint.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from ctrobust.operators.geometry import FanBeam2D
from ctrobust.operators.astra_backend import check_projector, concrete_device, default_projector, host_matrices, torch_matrices
from ctrobust.operators.base import LinearOperator
from ctrobust.operators.sparse import csr_tensor, register_memory_cache, spmm

__all__ = ["FanBackprojection", "fbp_weights", "redundancy_weights", "min_short_scan"]

_lock = threading.RLock()
# (geometry key, projector) -> (values of B in A^T's order, values of B^T in A's order), float32 CPU
_VALUES: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
# (geometry key, projector, device, dtype) -> (B, B^T) CSR tensors
_DEVICE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_WEIGHTS: dict[tuple, torch.Tensor] = {}


def virtual_positions(geometry: FanBeam2D) -> np.ndarray:
    """Bin centres rescaled to the virtual detector through the rotation axis, ``u_j / M`` (pixels)."""
    return geometry.detector_positions / geometry.magnification


def _gammas(geometry: FanBeam2D) -> np.ndarray:
    """Angle of each bin's ray to the central ray (radians), signed like the detector axis."""
    return np.arctan(geometry.detector_positions / (geometry.source_origin + geometry.origin_detector))


def min_short_scan(geometry: FanBeam2D) -> float:
    """The smallest ``angle_range`` FBP accepts: ``pi + 2 * fan_angle`` radians (a short scan)."""
    return math.pi + 2 * geometry.fan_angle


def redundancy_weights(geometry: FanBeam2D) -> np.ndarray:
    """``(A, D)`` float64: 1/2 for a full scan; Parker's weights for ``pi + 2 fan_angle <= angle_range < 2 pi``.

    With ctrobust's (ASTRA's) signs, ray ``(beta, gamma)`` is the parallel ray at ``theta = beta - gamma``;
    its conjugate is ``(beta + pi - 2 gamma, -gamma)``, and the weights of every conjugate pair sum to 1.
    Each view stands for the angle interval centred on it, so the scan covers ``[-h/2, angle_range - h/2)``.
    """
    a = geometry.n_angles
    if geometry.angle_range >= 2 * math.pi * (1 - 1e-12):
        return np.full(geometry.sinogram_shape, 0.5)
    if geometry.angle_range < min_short_scan(geometry) - 1e-12:
        raise ValueError(
            f"fan-beam FBP needs angle_range >= pi + 2 * fan angle = {min_short_scan(geometry):.4f} radians (a short "
            f"scan; fan angle {geometry.fan_angle:.4f}), got {geometry.angle_range:.4f}")
    h = geometry.angle_range / a
    delta = (geometry.angle_range - math.pi) / 2
    beta = (geometry.angles + h / 2)[:, None]  # position inside the scan [0, pi + 2 delta)
    gamma = _gammas(geometry)[None, :]
    w = np.ones((a, geometry.n_detectors))
    lo = beta < 2 * (delta + gamma)
    hi = beta >= math.pi + 2 * gamma
    w = np.where(lo, np.sin(math.pi / 4 * beta / (delta + gamma)) ** 2, w)
    w = np.where(hi, np.sin(math.pi / 4 * (math.pi + 2 * delta - beta) / (delta - gamma)) ** 2, w)
    return w


def fbp_weights(geometry: FanBeam2D) -> np.ndarray:
    """The sinogram weights ``w = c_j * r_ij`` applied before the ramp filter, ``(A, D)`` float64."""
    r = geometry.source_origin
    s = virtual_positions(geometry)
    return (r / np.sqrt(r * r + s * s))[None, :] * redundancy_weights(geometry)


def weight_tensor(geometry: FanBeam2D, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`fbp_weights` as a tensor ``(A, D)`` cached per device and dtype."""
    key = (geometry.key(), str(device), dtype)
    with _lock:
        if key not in _WEIGHTS:
            _WEIGHTS[key] = torch.as_tensor(fbp_weights(geometry), dtype=dtype, device=device)
        return _WEIGHTS[key]


def _depth_inverse_square(geometry: FanBeam2D) -> np.ndarray:
    """``1 / U^2`` per (view, pixel), ``(A, N*N)`` float64, ``U = (R + p . d) / R``, ``d = (-sin b, cos b)``.

    ASTRA's ``fanflat`` source sits at ``R (sin b, -cos b)``: at ``b = 0`` below the image, the rays run
    upwards (like parallel view 0, along the columns) and the detector axis is ``+x``.
    """
    n = geometry.image_size
    c = np.arange(n) - n / 2 + 0.5
    x = np.tile(c, n)  # column coordinate of pixel r*N + c
    y = np.repeat(-c, n)  # row 0 at the top
    b = geometry.angles[:, None]
    u = (geometry.source_origin - np.sin(b) * x[None, :] + np.cos(b) * y[None, :]) / geometry.source_origin
    return 1.0 / (u * u)


def _values(geometry: FanBeam2D, projector: str) -> tuple[torch.Tensor, torch.Tensor]:
    key = (geometry.key(), projector)
    with _lock:
        if key in _VALUES:
            return _VALUES[key]
        a_mat, at_mat = host_matrices(geometry, projector)
        n_pix, d = geometry.image_size ** 2, geometry.n_detectors
        inv_u2 = _depth_inverse_square(geometry).ravel()  # index view * N^2 + pixel

        def entries(mat, rows_are_rays):
            counts = torch.diff(mat.crow_indices().long()).numpy()
            rows = np.repeat(np.arange(mat.shape[0], dtype=np.int64), counts)
            cols = mat.col_indices().numpy().astype(np.int64)
            rays, pix = (rows, cols) if rows_are_rays else (cols, rows)
            return (rays // d) * n_pix + pix, mat.values().numpy()

        idx, vals = entries(a_mat, True)
        per_view = np.bincount(idx, weights=vals, minlength=geometry.n_angles * n_pix)  # sum_j a_(i,j),p
        scale = np.divide(inv_u2, per_view, out=np.zeros_like(per_view), where=per_view > 0)
        bt_vals = torch.from_numpy((vals * scale[idx]).astype(np.float32))
        del idx
        idx_t, vals_t = entries(at_mat, False)
        b_vals = torch.from_numpy((vals_t * scale[idx_t]).astype(np.float32))
        _VALUES[key] = (b_vals, bt_vals)
        return _VALUES[key]


def backprojection_matrices(geometry: FanBeam2D, projector: str | None = None, device="cpu",
                            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, B^T)`` as CSR tensors on ``device`` / ``dtype``, sharing the index tensors of ASTRA's ``(A^T, A)``."""
    projector = projector or default_projector(geometry)
    device = concrete_device(device)
    key = (geometry.key(), projector, str(device), dtype)
    with _lock:
        if key not in _DEVICE:
            a_mat, at_mat = torch_matrices(geometry, projector, device, torch.float32)
            b_vals, bt_vals = _values(geometry, projector)
            _DEVICE[key] = (
                csr_tensor(at_mat.crow_indices(), at_mat.col_indices(), b_vals.to(device=device, dtype=dtype), at_mat.shape),
                csr_tensor(a_mat.crow_indices(), a_mat.col_indices(), bt_vals.to(device=device, dtype=dtype), a_mat.shape),
            )
        return _DEVICE[key]


@register_memory_cache
def clear_memory_cache(geometry: FanBeam2D | None = None) -> None:
    """Drop the backprojection matrices and weights held in memory, of one ``geometry`` or all."""
    with _lock:
        for cache in (_VALUES, _DEVICE, _WEIGHTS):
            for k in [k for k in cache if geometry is None or k[0] == geometry.key()]:
                del cache[k]


class FanBackprojection(LinearOperator):
    """The distance-weighted fan-beam backprojection ``B``: sinograms ``(B, 1, A, D)`` -> images ``(B, 1, N, N)``.

    A sparse matrix with the sparsity of ASTRA's ``A^T`` (see the module docstring); its adjoint is the
    exact transpose ``B^T``, on CPU and CUDA tensors, float32 and float64 (float64 uses a float64 copy
    of the same float32 values).
    """

    def __init__(self, geometry: FanBeam2D, projector: str | None = None):
        if not isinstance(geometry, FanBeam2D):
            raise TypeError(f"geometry must be a FanBeam2D, got {type(geometry).__name__}")
        n = geometry.image_size
        super().__init__((1, geometry.n_angles, geometry.n_detectors), (1, n, n))
        self.geometry = geometry

        self.projector = check_projector(projector or default_projector(geometry), geometry)

    def _check_device(self, t: torch.Tensor) -> None:
        if t.device.type not in ("cpu", "cuda"):
            raise ValueError(f"FanBackprojection works on CPU and CUDA tensors, got a tensor on {t.device}")

    def _matvec(self, y: torch.Tensor) -> torch.Tensor:

        b, _ = backprojection_matrices(self.geometry, self.projector, y.device, y.dtype)
        n = self.geometry.image_size
        return spmm(b, y.reshape(y.shape[0], -1)).reshape(y.shape[0], 1, n, n)

    def _rmatvec(self, x: torch.Tensor) -> torch.Tensor:

        _, bt = backprojection_matrices(self.geometry, self.projector, x.device, x.dtype)
        return spmm(bt, x.reshape(x.shape[0], -1)).reshape(x.shape[0], 1, *self.geometry.sinogram_shape)

    def to_config(self) -> dict:
        return {"type": "FanBackprojection", "geometry": self.geometry.to_config(), "projector": self.projector}

    @classmethod
    def from_config(cls, config: dict) -> "FanBackprojection":
        return cls(FanBeam2D.from_config(config["geometry"]), config.get("projector"))

    def extra_repr(self) -> str:
        return f"geometry={self.geometry!r}, projector={self.projector!r}"
