"""The acquisition geometry of ``train``, ``attack``, ``evaluate`` and ``demo``: ``--geometry parallel|fan``
and the fan-beam lengths (pixels) of a spec, turned into a :class:`~ctrobust.operators.geometry.ParallelBeam2D` or
:class:`~ctrobust.operators.geometry.FanBeam2D` (docs/conventions.md)."""

from __future__ import annotations

from ctrobust.errors import CtrobustError

__all__ = ["GEOMETRY_KINDS", "FAN_FIELDS", "build_geometry", "geometry_fields", "protocol_of"]

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

    if getattr(spec, "protocol", None) is not None:  # --protocol NAME: the protocol's scan at this size
        return protocol_of(spec, size).geometry()
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


#: spec fields a ``--protocol`` replaces (refused when given with it)
PROTOCOL_FIELDS = ("angles", "geometry", *FAN_FIELDS, "photons", "read_noise", "crosstalk")


def protocol_of(spec, size: int):
    """The protocol ``spec.protocol`` (``--protocol NAME``, :mod:`ctrobust.evaluation.protocols`) at ``size`` px.

    Its geometry and noise replace ``--angles``, ``--geometry``, the fan lengths and ``--photons``: giving one of
    them too is refused (:class:`CtrobustError`), as is an unknown name.
    """
    from ctrobust.evaluation.protocols import PROTOCOLS

    name = spec.protocol
    if name not in PROTOCOLS:
        raise CtrobustError(f"--protocol {name!r}: unknown; choose one of {', '.join(PROTOCOLS)}")
    given = [spec.flag(k) for k in PROTOCOL_FIELDS if hasattr(spec, k) and spec.given(k)]
    if given:
        raise CtrobustError(f"--protocol {name} sets the geometry and the noise: drop {', '.join(given)}")
    return PROTOCOLS[name].at_size(int(size))
