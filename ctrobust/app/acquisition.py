"""The acquisition geometry of ``train``, ``attack``, ``evaluate`` and ``demo``: ``--geometry parallel|fan``
and the fan-beam lengths (pixels) of a spec, turned into a :class:`~ctrobust.operators.geometry.ParallelBeam2D` or
:class:`~ctrobust.operators.geometry.FanBeam2D` (docs/conventions.md)."""

from __future__ import annotations

from ctrobust.errors import CtrobustError

__all__ = ["GEOMETRY_KINDS", "FAN_FIELDS", "build_geometry", "geometry_fields"]

#: the values of ``--geometry``; the first is the default
GEOMETRY_KINDS = ("parallel", "fan")
#: spec fields that only apply with ``--geometry fan`` (keyword arguments of FanBeam2D, pixels)
FAN_FIELDS = ("source_origin", "origin_detector", "detector_spacing")


def geometry_fields(spec) -> dict:
    """The geometry fields of ``spec`` (``geometry`` and the fan lengths), for passing on to another spec."""
    return {name: getattr(spec, name) for name in ("geometry", *FAN_FIELDS)}


def build_geometry(spec, size: int, angles: int):
    """``ParallelBeam2D(size, angles)`` or, with ``spec.geometry == "fan"``, ``FanBeam2D(size, angles, **fan lengths)``.

    Raises :class:`CtrobustError` for fan lengths given without ``--geometry fan`` and for an impossible fan
    geometry (e.g. the source inside the image).
    """
    from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D

    kind = getattr(spec, "geometry", GEOMETRY_KINDS[0])
    lengths = {name: getattr(spec, name, None) for name in FAN_FIELDS}
    lengths = {k: v for k, v in lengths.items() if v is not None}
    if kind != "fan":
        if lengths:
            verb = "applies" if len(lengths) == 1 else "apply"
            raise CtrobustError(f"{', '.join(spec.flag(k) for k in lengths)} only {verb} with --geometry fan")
        return ParallelBeam2D(int(size), int(angles))
    try:
        return FanBeam2D(int(size), int(angles), **lengths)
    except ValueError as exc:
        raise CtrobustError(f"--geometry fan: {exc}") from None
