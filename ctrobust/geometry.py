"""Acquisition geometries.

The project's one CT geometry is 2D parallel beam. Units: the image is ``N x N`` pixels of side 1
(the pixel is the unit of length), centred on the rotation axis; detector bins have width 1 pixel and
are centred on the projection of the rotation axis; angles are in radians, uniformly spaced on
``[0, angle_range)`` (endpoint excluded). Sinograms are laid out ``(angle, detector)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np

__all__ = ["ParallelBeam2D"]


@dataclasses.dataclass(frozen=True)
class ParallelBeam2D:
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
    >>> ParallelBeam2D.from_dict(g.to_dict()) == g
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
        elif (
            isinstance(self.n_detectors, bool)
            or not isinstance(self.n_detectors, (int, np.integer))
            or self.n_detectors < 1
        ):
            raise ValueError(f"n_detectors must be a positive integer or None, got {self.n_detectors!r}")
        object.__setattr__(self, "n_detectors", int(self.n_detectors))
        angle_range = float(self.angle_range)
        if not (math.isfinite(angle_range) and 0 < angle_range <= 2 * math.pi):
            raise ValueError(f"angle_range must be in (0, 2 pi] radians, got {self.angle_range!r}")
        object.__setattr__(self, "angle_range", angle_range)

    @property
    def angles(self) -> np.ndarray:
        """View angles in radians, float64, shape (A,): ``i * angle_range / A``."""
        return np.arange(self.n_angles, dtype=np.float64) * (self.angle_range / self.n_angles)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(N, N)."""
        return (self.image_size, self.image_size)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """(A, D): angles first, detector bins second."""
        return (self.n_angles, self.n_detectors)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict; ``ParallelBeam2D.from_dict`` inverts it."""
        return {"type": "ParallelBeam2D", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "ParallelBeam2D":
        data = dict(data)
        kind = data.pop("type", "ParallelBeam2D")
        if kind != "ParallelBeam2D":
            raise ValueError(f"not a ParallelBeam2D description: type={kind!r}")
        return cls(**data)

    def key(self) -> str:
        """A short stable hash of the geometry (used to key cached system matrices)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
