"""The 2D Radon transform (parallel or fan beam) and filtered backprojection as a :class:`LinearOperator`.

Shapes: images ``(B, 1, N, N)``, sinograms ``(B, 1, A, D)`` (A angles, D detector bins). Units: the
pixel is the unit of length (pixel side 1; parallel-beam bin width 1; fan-beam distances and bin width
in pixels), angles in radians. ``op(x)`` is the line integral of the image (ASTRA's ``linear``
projector by default, ``line_fanflat`` for fan beam); ``op.adjoint`` its exact adjoint for plain inner
products; ``op.fbp`` the filtered backprojection, scaled so that ``op.fbp(op(x)) ~ x`` (``op.pinv`` is
FBP with the default filter, the name every operator shares). Fan beam uses weighted FBP
(:mod:`ctrobust.operators.fanbeam`). See docs/conventions.md for the layout, centre and scaling
conventions.
"""

from __future__ import annotations

import math

import torch

from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D, geometry_from_config
from ctrobust.operators.base import LinearOperator, check_batch
from ctrobust.operators.filters import FILTERS, filter_sinogram

__all__ = ["RadonTransform", "BACKENDS"]

#: Backend names accepted by :class:`RadonTransform` (``"auto"`` picks the fastest available).
BACKENDS = ("auto", "astra", "odl")


class RadonTransform(LinearOperator):
    """2D Radon transform ``A`` (parallel or fan beam): images ``(B, 1, N, N)`` -> sinograms ``(B, 1, A, D)``.

    Parameters
    ----------
    geometry : ParallelBeam2D or FanBeam2D
        N pixels of side 1 centred on the rotation axis, A angles ``i * angle_range / A`` (radians),
        D detector bins (parallel: width 1 centred on the axis; fan: a flat detector, ASTRA ``fanflat``,
        distances in pixels, see :class:`~ctrobust.operators.geometry.FanBeam2D`).
    backend : {"auto", "astra", "odl"}
        ``"astra"``: ASTRA's system matrix applied by torch as a sparse CSR matrix (int32 indices) to
        the whole batch, on CPU and CUDA tensors (the matrix is moved to the GPU once; no host
        copies). ``"odl"``: ODL 1.0's ``RayTransform`` (``astra_cpu``), CPU only, float32 inside,
        looped over the batch, an independent cross-check. ``"auto"``: the fastest available, i.e.
        ``"astra"`` on CPU and CUDA.
    projector : str, optional
        ASTRA projector type of the ``astra`` backend (keyword only): parallel beam ``linear`` (default),
        ``line``, ``strip``; fan beam ``line_fanflat`` (default), ``strip_fanflat``. The ``odl`` backend
        uses ODL's choice (``linear`` / ``line_fanflat``).

    Attributes
    ----------
    geometry : ParallelBeam2D or FanBeam2D
    backend : str
        The backend in use (``"astra"`` or ``"odl"``).

    Notes
    -----
    * ``op(x)``, ``op.adjoint(y)`` and ``op.fbp(y)`` accept float32 and float64 (output dtype = input
      dtype), any batch size and non-contiguous input, and are differentiable: the gradient of the
      forward is the adjoint and vice versa (custom autograd function; torch never differentiates
      through the sparse product itself).
    * float64 inputs use a float64 copy of the same matrix (ASTRA's weights are float32 numbers, so
      they are exact) with float64 accumulation: adjoint dot tests ~1e-15.
    * The system matrix is built once per geometry (about 7 s at 256 px) and cached in memory and in
      ``ctrobust.cache.cache_dir("radon")`` (``$CTROBUST_CACHE_DIR`` or the user cache directory).

    Examples
    --------
    >>> import torch
    >>> from ctrobust import ParallelBeam2D, RadonTransform
    >>> op = RadonTransform(ParallelBeam2D(32, 20))
    >>> y = op(torch.ones(2, 1, 32, 32))
    >>> tuple(y.shape), op.backend
    ((2, 1, 20, 46), 'astra')
    >>> tuple(op.fbp(y).shape)
    (2, 1, 32, 32)
    """

    def __init__(self, geometry: ParallelBeam2D | FanBeam2D, backend: str = "auto", *, projector: str | None = None):
        if not isinstance(geometry, (ParallelBeam2D, FanBeam2D)):
            raise TypeError(f"geometry must be a ParallelBeam2D or a FanBeam2D, got {type(geometry).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown Radon backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        n = geometry.image_size
        super().__init__((1, n, n), (1, geometry.n_angles, geometry.n_detectors))
        self.geometry = geometry
        if backend in ("auto", "astra"):
            from ctrobust.operators.astra_backend import AstraSparseBackend

            self._backend = AstraSparseBackend(geometry, projector)
        else:
            from ctrobust.operators.astra_backend import default_projector

            if projector not in (None, default_projector(geometry)):
                raise ValueError("projector= applies to the 'astra' backend only")
            from ctrobust.operators.odl_backend import OdlBackend

            self._backend = OdlBackend(geometry)

    @property
    def backend(self) -> str:
        """Name of the backend in use: ``"astra"`` or ``"odl"``."""
        return self._backend.name

    @property
    def projector(self) -> str | None:
        """ASTRA projector type of the ``astra`` backend (None for ``odl``)."""
        return getattr(self._backend, "projector", None)

    @property
    def name(self) -> str:
        return f"RadonTransform[{self.backend}]"

    def _check_device(self, t: torch.Tensor) -> None:
        self._backend.check_device(t)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._backend.forward(x)

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self._backend.adjoint(y)

    @property
    def is_fan(self) -> bool:
        """Whether the geometry is fan beam (:class:`~ctrobust.operators.geometry.FanBeam2D`)."""
        return isinstance(self.geometry, FanBeam2D)

    @property
    def fbp_scale(self) -> float:
        """The scalar factor of FBP. Parallel beam: the angular quadrature weight ``min(angle_range, pi) / A``
        radians (``pi / A`` on [0, pi)). Fan beam: ``(angle_range / A) / ds``, the angle step over the bin
        width ``ds = detector_spacing / magnification`` at the rotation axis (the redundancy weights carry
        the 1/2 of a full scan)."""
        g = self.geometry
        if self.is_fan:
            return (g.angle_range / g.n_angles) / (g.detector_spacing / g.magnification)
        return min(g.angle_range, math.pi) / g.n_angles

    def fbp(self, y: torch.Tensor, filter: str = "ram-lak", frequency_scaling: float = 1.0) -> torch.Tensor:
        """Filtered backprojection ``(B, 1, A, D) -> (B, 1, N, N)``, scaled so ``fbp(op(x)) ~ x``.

        Parallel beam: ``fbp(y) = fbp_scale * A^T (h * y)``: every projection is convolved along the
        detector with the spatially discretised ramp ``h`` (Kak & Slaney; response ~``|f|``, f in cycles
        per bin, zero-padded FFT of length a power of two ``>= 2 D``) times the window, then
        backprojected with the exact adjoint and multiplied by the angle step ``pi / A``.

        Fan beam (weighted FBP): ``fbp(y) = fbp_scale * B (h * (w o y))`` with the cosine and redundancy
        weights ``w`` and the distance-weighted backprojection matrix ``B``
        (:mod:`ctrobust.operators.fanbeam`; FBP needs ``angle_range >= pi + 2 * fan angle``).

        Parameters
        ----------
        y : torch.Tensor
            Sinograms ``(B, 1, A, D)``, float32 or float64.
        filter : {"ram-lak", "shepp-logan", "cosine", "hamming", "hann"}
        frequency_scaling : float
            In ``(0, 1]``; frequencies above ``frequency_scaling`` times Nyquist are cut.

        Returns
        -------
        torch.Tensor
            Images ``(B, 1, N, N)``, same dtype. Linear in ``y`` and differentiable (torch FFT and
            the operator's adjoint), so gradients reach the sinogram exactly.
        """
        if not isinstance(filter, str) or filter.lower() not in FILTERS:
            raise ValueError(f"unknown FBP filter {filter!r}; valid filters: {', '.join(FILTERS)}")
        check_batch(y, self.range_shape, "fbp input", name=self.name)
        self._check_device(y)
        if self.is_fan:
            from ctrobust.operators.fanbeam import weight_tensor

            if y.device.type not in ("cpu", "cuda"):
                raise ValueError(f"{self.name}: fan-beam FBP works on CPU and CUDA tensors, got a tensor on {y.device}")
            filtered = filter_sinogram(y * weight_tensor(self.geometry, y.dtype, y.device), filter, frequency_scaling)
            return self.fan_backprojection(filtered) * self.fbp_scale
        filtered = filter_sinogram(y, filter, frequency_scaling)
        return self.adjoint(filtered) * self.fbp_scale

    def fan_backprojection(self, y: torch.Tensor) -> torch.Tensor:
        """Fan beam only: the distance-weighted backprojection ``B y`` of FBP (a linear operator with exact adjoint).

        Built from ASTRA's system matrix of the ``astra`` backend's projector (``line_fanflat`` for ``odl``).
        """
        if not self.is_fan:
            raise ValueError("fan_backprojection applies to fan-beam geometries only")
        from ctrobust.operators.fanbeam import FanBackprojection

        bp = self.__dict__.get("_fan_bp")
        if bp is None:
            bp = FanBackprojection(self.geometry, self.projector)
            self.__dict__["_fan_bp"] = bp
        return bp(y)

    def pinv(self, y: torch.Tensor, filter: str = "ram-lak", frequency_scaling: float = 1.0) -> torch.Tensor:
        """The operator's inverse in the shared vocabulary: :meth:`fbp` (default filter ``"ram-lak"``)."""
        return self.fbp(y, filter=filter, frequency_scaling=frequency_scaling)

    def to_config(self) -> dict:
        """``{"type": "RadonTransform", "geometry": ..., "backend": ..., "projector": ...}`` (JSON-able; the
        geometry's ``type`` says parallel or fan beam)."""
        return {"type": "RadonTransform", "geometry": self.geometry.to_config(), "backend": self.backend,
                "projector": self.projector}

    @classmethod
    def from_config(cls, config: dict) -> "RadonTransform":
        """Rebuild from :meth:`to_config` output (the projector applies to the ``astra`` backend only)."""
        geometry = geometry_from_config(config["geometry"])
        backend = config.get("backend") or "auto"
        kwargs = {"projector": config["projector"]} if backend == "astra" and config.get("projector") else {}
        return cls(geometry, backend=backend, **kwargs)

    @classmethod
    def shapes_from_config(cls, config: dict):
        if not isinstance(config.get("geometry"), dict):
            return None
        try:
            g = geometry_from_config(config["geometry"])
        except (TypeError, ValueError):
            return None
        return (1, *g.image_shape), (1, *g.sinogram_shape)

    def extra_repr(self) -> str:
        return f"geometry={self.geometry!r}, backend={self.backend!r}"
