"""A mismatched scanner: the Radon transform ``A'`` that generated the data differs from the nominal ``A``.

:class:`MismatchedRadon` is ``A' = G P A_g``: ``A_g`` the Radon transform of the nominal geometry with the
view angles offset and the detector shifted (ASTRA's system matrix of that geometry), ``P`` the
scanner's handling of missing views (each missing view filled from its measured neighbours, or left
zero), ``G`` per-detector gains. Each factor is linear and has its exact adjoint, so ``A'`` is a
:class:`~ctrobust.operators.base.LinearOperator` with ``A'.adjoint = A_g^T P^T G`` (dot test ~1e-16 in
float64). With no mismatch ``A' = A`` exactly (the nominal :class:`RadonTransform` itself is used).

The mismatches (units as in docs/conventions.md):

- ``angle_offset`` (radians): every view is acquired at ``theta_i + angle_offset`` (a gantry angle
  calibration error);
- ``detector_shift`` (pixels = detector bins): the detector sits ``s`` bins further along its axis, so
  bin ``j`` measures the line at ``t_j + s`` (a centre-of-rotation error of ``-s``; ASTRA's
  ``geom_postalignment``);
- ``gains``: per-detector factors ``g_j`` on the measured line integrals, ``y'[i, j] = g_j y[i, j]``
  (drawn ``1 + gain_std * z_j``, ``z_j ~ N(0, 1)`` seeded): miscalibrated channels, the cause of ring
  artifacts. (A gain error of the raw counts is an additive offset after the log, which is affine, not
  linear; the multiplicative post-log model keeps the operator contract.)
- ``missing``: view indices not acquired; ``fill="interpolate"`` replaces each by linear interpolation
  between the nearest acquired views (a scanner's usual repair), ``fill="zero"`` leaves zeros.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import scipy.sparse as sp
import torch

from ctrobust.operators.base import LinearOperator, register_operator
from ctrobust.operators.sparse import spmm, to_torch_csr

__all__ = ["MismatchedRadon", "view_fill_matrix", "FILLS"]

FILLS = ("interpolate", "zero")
_lock = threading.RLock()
_MATRICES: dict[tuple, tuple] = {}  # (geometry key, projector, offset, shift) -> (A_g, A_g^T) scipy CSR


def view_fill_matrix(n_angles: int, missing, fill: str = "interpolate") -> np.ndarray:
    """The ``(A, A)`` matrix ``M`` with ``y' = M y`` along the view axis: identity on acquired views; a
    missing view is the linear interpolation of the nearest acquired views before and after it (the
    nearest one at either end), or zero (``fill="zero"``)."""
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    missing = sorted({int(i) for i in missing})
    if any(i < 0 or i >= n_angles for i in missing):
        raise ValueError(f"missing view indices must lie in [0, {n_angles}), got {missing}")
    if len(missing) >= n_angles:
        raise ValueError("at least one view must be acquired")
    m = np.eye(n_angles)
    acquired = np.array([i for i in range(n_angles) if i not in set(missing)])
    for i in missing:
        m[i, i] = 0.0
        if fill == "zero":
            continue
        before, after = acquired[acquired < i], acquired[acquired > i]
        if len(before) and len(after):
            a, b = before[-1], after[0]
            w = (i - a) / (b - a)
            m[i, a], m[i, b] = 1.0 - w, w
        else:
            m[i, (before[-1] if len(before) else after[0])] = 1.0
    return m


def _astra_matrix(geometry, projector: str, angle_offset: float, detector_shift: float) -> tuple:
    """ASTRA's system matrix of ``geometry`` with the angles offset and the detector shifted (cached)."""
    import astra
    from astra.functions import geom_postalignment

    from ctrobust.operators.astra_backend import astra_geometries

    key = (geometry.key(), projector, float(angle_offset), float(detector_shift))
    with _lock:
        if key in _MATRICES:
            return _MATRICES[key]
        vol_geom, proj_geom = astra_geometries(geometry)
        proj_geom = dict(proj_geom)
        proj_geom["ProjectionAngles"] = np.asarray(proj_geom["ProjectionAngles"], dtype=np.float64) + angle_offset
        if detector_shift:
            proj_geom = geom_postalignment(proj_geom, float(detector_shift))
        pid = astra.create_projector(projector, proj_geom, vol_geom)
        mid = None
        try:
            mid = astra.projector.matrix(pid)
            mat = sp.csr_matrix(astra.matrix.get(mid), dtype=np.float32)
        finally:
            if mid is not None:
                astra.matrix.delete(mid)
            astra.projector.delete(pid)
        mat.sum_duplicates()
        _MATRICES[key] = (mat, sp.csr_matrix(mat.T))
        return _MATRICES[key]


class MismatchedRadon(LinearOperator):
    """The Radon transform of a miscalibrated scanner, ``A' = G P A_g`` (module docstring).

    Parameters
    ----------
    operator : RadonTransform
        The nominal ``A`` (its geometry, projector and, at zero geometric mismatch, the operator itself).
    angle_offset : float
        Radians added to every view angle.
    detector_shift : float
        Detector shift in pixels (bins).
    gains : array-like of D floats, optional
        Per-detector gains; default ``1 + gain_std * z`` with ``z ~ N(0, 1)`` from ``seed``.
    gain_std : float
        Standard deviation of the drawn gains (0: no gain error).
    missing : sequence of int, optional
        Indices of missing views; default ``missing_views`` indices drawn from ``seed``.
    missing_views : int
        Number of missing views to draw when ``missing`` is not given.
    fill : {"interpolate", "zero"}
        What the scanner puts in a missing view.
    seed : int
        Seed of the gains and of the missing views (a NumPy generator of its own).

    Examples
    --------
    >>> import torch
    >>> from ctrobust import ParallelBeam2D, RadonTransform
    >>> A = RadonTransform(ParallelBeam2D(16, 10))
    >>> x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    >>> bool(torch.equal(MismatchedRadon(A)(x), A(x)))
    True
    >>> Ap = MismatchedRadon(A, angle_offset=0.01, detector_shift=0.5, gain_std=0.02, missing_views=2)
    >>> Ap.dot_test() < 1e-12
    True
    """

    def __init__(self, operator, *, angle_offset: float = 0.0, detector_shift: float = 0.0, gains=None,
                 gain_std: float = 0.0, missing=None, missing_views: int = 0, fill: str = "interpolate",
                 seed: int = 0):
        geometry = getattr(operator, "geometry", None)
        if geometry is None or not hasattr(geometry, "n_detectors"):
            raise ValueError(f"MismatchedRadon needs a CT operator with a geometry, got {type(operator).__name__}")
        for name, v in (("angle_offset", angle_offset), ("detector_shift", detector_shift), ("gain_std", gain_std)):
            if not math.isfinite(float(v)):
                raise ValueError(f"{name} must be finite, got {v!r}")
        if gain_std < 0:
            raise ValueError(f"gain_std must be >= 0, got {gain_std}")
        super().__init__(operator.domain_shape, operator.range_shape)
        self.nominal = operator
        self.geometry = geometry
        self.angle_offset, self.detector_shift = float(angle_offset), float(detector_shift)
        self.fill, self.seed, self.gain_std = fill, int(seed), float(gain_std)
        n_angles, n_det = geometry.n_angles, geometry.n_detectors
        rng = np.random.default_rng(self.seed)
        if gains is None:
            gains = 1.0 + self.gain_std * rng.standard_normal(n_det) if self.gain_std > 0 else np.ones(n_det)
        gains = np.asarray(gains, dtype=np.float64).reshape(-1)
        if gains.shape != (n_det,) or not np.all(np.isfinite(gains)):
            raise ValueError(f"gains must be {n_det} finite numbers (one per detector bin)")
        if missing is None:
            k = int(missing_views)
            if k < 0 or k >= n_angles:
                raise ValueError(f"missing_views must be in [0, {n_angles}), got {missing_views}")
            missing = sorted(rng.choice(n_angles, size=k, replace=False).tolist()) if k else []
        self.gains = gains
        self.missing = sorted({int(i) for i in missing})
        self.fill_matrix = view_fill_matrix(n_angles, self.missing, fill)
        self.projector = getattr(operator, "projector", None) or "linear"
        self._geometric = bool(self.angle_offset or self.detector_shift)
        self._has_gains = not bool(np.all(gains == 1.0))
        self._cache: dict = {}

    @property
    def name(self) -> str:
        return "MismatchedRadon"

    def _check_device(self, t: torch.Tensor) -> None:
        self.nominal._check_device(t)

    def _tensors(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._cache:
            out = {"gains": torch.as_tensor(self.gains, dtype=dtype, device=device),
                   "fill": torch.as_tensor(self.fill_matrix, dtype=dtype, device=device)}
            if self._geometric:
                mat, mat_t = _astra_matrix(self.geometry, self.projector, self.angle_offset, self.detector_shift)
                out["A"], out["AT"] = to_torch_csr(mat, device, dtype), to_torch_csr(mat_t, device, dtype)
            self._cache[key] = out
        return self._cache[key]

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        t = self._tensors(x.device, x.dtype)
        if self._geometric:
            y = spmm(t["A"], x.reshape(x.shape[0], -1)).reshape(x.shape[0], *self.range_shape)
        else:
            y = self.nominal._matvec(x)
        if self.missing:
            y = torch.einsum("ab,ncbd->ncad", t["fill"], y)
        if self._has_gains:
            y = y * t["gains"]
        return y

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        t = self._tensors(y.device, y.dtype)
        if self._has_gains:
            y = y * t["gains"]
        if self.missing:
            y = torch.einsum("ab,ncad->ncbd", t["fill"], y)
        y = y.contiguous()
        if self._geometric:
            return spmm(t["AT"], y.reshape(y.shape[0], -1)).reshape(y.shape[0], *self.domain_shape)
        return self.nominal._rmatvec(y)

    def to_config(self) -> dict:
        return {"type": "MismatchedRadon", "operator": self.nominal.to_config(), "angle_offset": self.angle_offset,
                "detector_shift": self.detector_shift, "gains": self.gains.tolist(), "missing": self.missing,
                "fill": self.fill}

    @classmethod
    def from_config(cls, config: dict) -> "MismatchedRadon":
        from ctrobust.operators.base import operator_from_config

        return cls(operator_from_config(config["operator"]), angle_offset=config["angle_offset"],
                   detector_shift=config["detector_shift"], gains=config["gains"], missing=config["missing"],
                   fill=config["fill"])

    def extra_repr(self) -> str:
        return (f"angle_offset={self.angle_offset:g}, detector_shift={self.detector_shift:g}, "
                f"gain_std={self.gain_std:g}, missing={self.missing}, fill={self.fill!r}")


register_operator("MismatchedRadon", MismatchedRadon, overwrite=True)
