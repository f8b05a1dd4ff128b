"""ODL backend: ODL 1.0's ``RayTransform`` as an independent route and cross-check (CPU only).

The ODL geometry is built explicitly to equal :class:`~ctrobust.operators.geometry.ParallelBeam2D`:

* image space ``uniform_discr([-N/2, -N/2], [N/2, N/2], (N, N))``: N pixels of side 1 (unit cell
  volume, so ODL's weighted inner product is the plain sum);
* angle partition with nodes ``i * angle_range / A`` (a uniform partition of
  ``[-h/2, angle_range - h/2]`` with ``h = angle_range / A``; ODL's ``parallel_beam_geometry`` would
  put them at ``(i + 1/2) h``);
* detector partition of D unit bins on ``[-D/2, D/2]``;
* ODL's image axes are ``(x, y)`` while ctrobust's (ASTRA's) are ``(row, col)`` with row 0 at the top,
  so ``ODL(rot90(img, -1)) == ASTRA(img)``; the backend rotates on the way in and back on the way out.

Fan beam (:class:`~ctrobust.operators.geometry.FanBeam2D`): ``FanBeamGeometry`` with the same angle partition,
a flat detector partition of D bins of width ``detector_spacing`` on ``[-D s/2, D s/2]`` (lengths on the
detector, pixels), ``src_radius = source_origin`` and ``det_radius = origin_detector``; ODL then uses
ASTRA's ``line_fanflat`` projector (agreement with the ``astra`` backend ~1e-4, float32; the adjoint
is ODL's, a dot test ~2e-7, not the transpose of ASTRA's matrix bit for bit).

ODL's ``astra_cpu`` implementation computes in float32, so float64 inputs are rounded to float32
inside (dot tests ~1e-7, not 1e-15). The batch is looped over: this backend is a cross-check, slower
than the ``astra`` backend. The adjoint is ``R.adjoint``; with unit pixels and ODL 1.0's unit range
weighting it is the adjoint for plain inner products (checked in tests/test_radon.py).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D

__all__ = ["OdlBackend", "odl_ray_transform"]


@functools.lru_cache(maxsize=8)
def odl_ray_transform(geometry: ParallelBeam2D | FanBeam2D, impl: str = "astra_cpu"):
    """ODL ``RayTransform`` equal to ``geometry`` (float32 image space), cached per geometry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import odl
        from odl.applications import tomo

    n, a, d = geometry.image_size, geometry.n_angles, geometry.n_detectors
    space = odl.uniform_discr([-n / 2, -n / 2], [n / 2, n / 2], (n, n), dtype="float32")
    step = geometry.angle_range / a
    angle_partition = odl.uniform_partition(-step / 2, geometry.angle_range - step / 2, a)
    detector_partition = odl.uniform_partition(-d / 2, d / 2, d)
    if isinstance(geometry, FanBeam2D):
        half = d * geometry.detector_spacing / 2
        odl_geometry = tomo.FanBeamGeometry(angle_partition, odl.uniform_partition(-half, half, d),
                                            src_radius=geometry.source_origin, det_radius=geometry.origin_detector)
    else:
        odl_geometry = tomo.Parallel2dGeometry(angle_partition, detector_partition)
    return tomo.RayTransform(space, odl_geometry, impl=impl)


class OdlBackend:
    """Radon transform through ODL's ``RayTransform`` (``astra_cpu``), one sample at a time."""

    name = "odl"

    def __init__(self, geometry: ParallelBeam2D | FanBeam2D):
        self.geometry = geometry

    @property
    def ray_transform(self):
        return odl_ray_transform(self.geometry)

    def check_device(self, t: torch.Tensor) -> None:
        if t.device.type != "cpu":
            raise ValueError(
                f"RadonTransform(backend='odl') works on CPU tensors only (ODL's astra_cpu), got a tensor "
                f"on {t.device}; use backend='astra' (or 'auto') for {t.device.type} tensors"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, N, N) -> (B, 1, A, D)``."""
        ray = self.ray_transform
        arrays = x.detach().to(torch.float32).numpy()
        out = [np.asarray(ray(np.ascontiguousarray(np.rot90(img[0], -1))).asarray()) for img in arrays]
        return torch.from_numpy(np.stack(out)[:, None]).to(x.dtype)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, 1, A, D) -> (B, 1, N, N)``."""
        adj = self.ray_transform.adjoint
        arrays = y.detach().to(torch.float32).numpy()
        out = [np.rot90(np.asarray(adj(np.ascontiguousarray(s[0])).asarray()), 1) for s in arrays]
        return torch.from_numpy(np.ascontiguousarray(np.stack(out)[:, None])).to(y.dtype)
