"""Acquisition geometries: 2D parallel beam (:class:`ParallelBeam2D`) and 2D fan beam with a flat
detector (:class:`FanBeam2D`).

Units: the image is ``N x N`` pixels of side 1 (**the pixel is the unit of length**, for every distance
below), centred on the rotation axis; angles are in radians, uniformly spaced on ``[0, angle_range)``
(endpoint excluded). Sinograms are laid out ``(angle, detector)``. Parallel beam: detector bins of
width 1 centred on the projection of the rotation axis. Fan beam: a point source at distance
``source_origin`` from the rotation axis, a flat detector at distance ``origin_detector`` on the other
side, bins of width ``detector_spacing`` (measured on the detector) centred on the central ray; these
are ASTRA's ``fanflat`` conventions (docs/conventions.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np

__all__ = ["ParallelBeam2D", "FanBeam2D", "geometry_from_config"]


class _Scan2D:
    """What both 2-D scan geometries share: view angles on ``[0, angle_range)`` and the array shapes."""

    image_size: int
    n_angles: int
    n_detectors: int
    angle_range: float

    def _set_angle_range(self) -> None:
        angle_range = float(self.angle_range)
        if not (math.isfinite(angle_range) and 0 < angle_range <= 2 * math.pi):
            raise ValueError(f"angle_range must be in (0, 2 pi] radians, got {self.angle_range!r}")
        object.__setattr__(self, "angle_range", angle_range)

    def _set_n_detectors(self) -> None:
        n = self.n_detectors
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_detectors must be a positive integer or None, got {n!r}")
        object.__setattr__(self, "n_detectors", int(n))

    @property
    def angles(self) -> np.ndarray:
        """View (source) angles in radians, float64, shape (A,): ``i * angle_range / A``."""
        return np.arange(self.n_angles, dtype=np.float64) * (self.angle_range / self.n_angles)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(N, N)."""
        return (self.image_size, self.image_size)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """(A, D): angles first, detector bins second."""
        return (self.n_angles, self.n_detectors)


@dataclasses.dataclass(frozen=True)
class ParallelBeam2D(_Scan2D):
    """A 2D parallel-beam geometry: a frozen, hashable, serialisable value.

    Parameters
    ----------
    image_size : int
        N, the image is N x N pixels of unit side.
    n_angles : int
        A, number of views, uniformly spaced on ``[0, angle_range)`` radians.
    n_detectors : int, optional
        D, number of detector bins of unit width; default ``ceil(sqrt(2) * N)`` so the whole image
        is seen from every angle.
    angle_range : float
        Angular range in radians (default pi, the full parallel-beam range).

    Examples
    --------
    >>> g = ParallelBeam2D(64, 30)
    >>> g
    ParallelBeam2D(image_size=64, n_angles=30, n_detectors=91, angle_range=3.141592653589793)
    >>> g.sinogram_shape
    (30, 91)
    >>> ParallelBeam2D.from_config(g.to_config()) == g
    True
    """

    image_size: int
    n_angles: int
    n_detectors: int | None = None
    angle_range: float = math.pi

    def __post_init__(self) -> None:
        for name in ("image_size", "n_angles"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.n_detectors is None:
            object.__setattr__(self, "n_detectors", math.ceil(math.sqrt(2) * self.image_size))
        self._set_n_detectors()
        self._set_angle_range()

    def to_config(self) -> dict:
        """A JSON-serialisable dict; ``ParallelBeam2D.from_config`` inverts it."""
        return {"type": "ParallelBeam2D", **dataclasses.asdict(self)}

    @classmethod
    def from_config(cls, data: dict) -> "ParallelBeam2D":
        data = dict(data)
        kind = data.pop("type", "ParallelBeam2D")
        if kind != "ParallelBeam2D":
            raise ValueError(f"not a ParallelBeam2D description: type={kind!r}")
        return cls(**data)

    def key(self) -> str:
        """A short stable hash of the geometry (used to key cached system matrices)."""
        text = json.dumps(self.to_config(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive number (pixels), got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out > 0):
        raise ValueError(f"{name} must be a positive number (pixels), got {value!r}")
    return out


@dataclasses.dataclass(frozen=True)
class FanBeam2D(_Scan2D):
    """A 2D fan-beam geometry with a flat detector (ASTRA ``fanflat``): a frozen, hashable, serialisable value.

    All lengths are in **pixels** (the image's pixel side is 1).

    Parameters
    ----------
    image_size : int
        N, the image is N x N pixels of unit side, centred on the rotation axis.
    n_angles : int
        A, number of source positions, uniformly spaced on ``[0, angle_range)`` radians.
    n_detectors : int, optional
        D, bins of the flat detector; default: the fewest whose fan covers the image's circumscribed
        circle (radius ``N / sqrt(2)``), so every pixel is seen from every angle.
    source_origin : float, optional
        Distance source - rotation axis (pixels); default ``2 sqrt(2) N``, twice the image diagonal.
    origin_detector : float, optional
        Distance rotation axis - detector (pixels); default ``source_origin / 2`` (magnification 1.5,
        the order of clinical scanners, whose detector sits 0.7-0.85 x the source distance behind the axis).
    detector_spacing : float, optional
        Bin width on the detector (pixels); default the magnification ``(source_origin +
        origin_detector) / source_origin``, so a bin is 1 pixel wide at the rotation axis.
    angle_range : float
        Angular range of the source in radians, default ``2 pi`` (a full scan). FBP needs at least a
        short scan ``pi + 2 * fan_angle`` (Parker weights below ``2 pi``).

    Examples
    --------
    >>> g = FanBeam2D(64, 30)
    >>> g.sinogram_shape, round(g.source_origin, 3), round(g.origin_detector, 3), g.detector_spacing
    ((30, 94), 181.019, 90.51, 1.5)
    >>> FanBeam2D.from_config(g.to_config()) == g
    True
    """

    image_size: int
    n_angles: int
    n_detectors: int | None = None
    source_origin: float | None = None
    origin_detector: float | None = None
    detector_spacing: float | None = None
    angle_range: float = 2 * math.pi

    def __post_init__(self) -> None:
        n = _positive_int("image_size", self.image_size)
        object.__setattr__(self, "image_size", n)
        object.__setattr__(self, "n_angles", _positive_int("n_angles", self.n_angles))
        so = 2 * math.sqrt(2) * n if self.source_origin is None else _positive_float("source_origin", self.source_origin)
        radius = n / math.sqrt(2)
        if so <= radius:
            raise ValueError(f"source_origin must exceed the image's circumscribed radius N / sqrt(2) = {radius:.3f} "
                             f"pixels (the source must lie outside the image), got {so!r}")
        od = so / 2 if self.origin_detector is None else _positive_float("origin_detector", self.origin_detector)
        spacing = ((so + od) / so if self.detector_spacing is None
                   else _positive_float("detector_spacing", self.detector_spacing))
        object.__setattr__(self, "source_origin", float(so))
        object.__setattr__(self, "origin_detector", float(od))
        object.__setattr__(self, "detector_spacing", float(spacing))
        if self.n_detectors is None:
            # half-width of the fan covering the circle of radius r, on the detector
            half = (so + od) * radius / math.sqrt(so * so - radius * radius)
            object.__setattr__(self, "n_detectors", math.ceil(2 * half / spacing - 1e-9))
        self._set_n_detectors()
        self._set_angle_range()

    @property
    def magnification(self) -> float:
        """``(source_origin + origin_detector) / source_origin``: detector lengths over lengths at the axis."""
        return (self.source_origin + self.origin_detector) / self.source_origin

    @property
    def detector_positions(self) -> np.ndarray:
        """Bin centres ``u_j`` on the detector (pixels), float64 (D,): ``(j - D/2 + 1/2) * detector_spacing``."""
        return (np.arange(self.n_detectors, dtype=np.float64) - self.n_detectors / 2 + 0.5) * self.detector_spacing

    @property
    def fan_angle(self) -> float:
        """Half opening angle of the fan (radians): the angle of the outermost bin edge to the central ray."""
        half = self.n_detectors * self.detector_spacing / 2
        return math.atan(half / (self.source_origin + self.origin_detector))

    def to_config(self) -> dict:
        """A JSON-serialisable dict; ``FanBeam2D.from_config`` (or :func:`geometry_from_config`) inverts it."""
        return {"type": "FanBeam2D", **dataclasses.asdict(self)}

    @classmethod
    def from_config(cls, data: dict) -> "FanBeam2D":
        data = dict(data)
        kind = data.pop("type", "FanBeam2D")
        if kind != "FanBeam2D":
            raise ValueError(f"not a FanBeam2D description: type={kind!r}")
        return cls(**data)

    def key(self) -> str:
        """A short stable hash of the geometry type and all its parameters (keys cached system matrices)."""
        text = json.dumps(self.to_config(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


#: geometry type name -> class
GEOMETRIES = {"ParallelBeam2D": ParallelBeam2D, "FanBeam2D": FanBeam2D}


def geometry_from_config(data: dict):
    """Rebuild any geometry from its ``to_config()`` (``type`` absent: parallel beam, the historical format)."""
    if not isinstance(data, dict):
        raise ValueError(f"not a geometry description: {data!r}")
    kind = data.get("type", "ParallelBeam2D")
    if kind not in GEOMETRIES:
        raise ValueError(f"unknown geometry type {kind!r}; known: {', '.join(GEOMETRIES)}")
    return GEOMETRIES[kind].from_config(data)
