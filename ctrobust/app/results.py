"""The result folder every command writes through: checked before any work, atomic files, one summary schema.

:class:`ResultFolder` wraps :mod:`ctrobust.files` (the one atomic writer and the one non-empty-folder check)
and :mod:`ctrobust.evaluation.report` (CSV / JSON / PNG writers). Its ``summary.json`` has one schema for every
command::

    {"command": "attack" | "evaluate" | "demo" | ..., "ctrobust_version": "...",
     "config": {...the command's settings...}, "models": [{"label", "source", "kind", "info"}, ...],
     "summary": [{"model", "condition", "eps"?, "n", "<metric>_mean", "<metric>_std", ...}, ...],
     ...command-specific tables ("verification", "shift", "features"),
     "tables": {"summary.csv": {"columns": [...], "rows": n}, ...}}

``summary.json`` is the companion of every CSV table of the folder: ``tables`` names each CSV with its columns
and row count. What was measured is in ``config``: ``acquisition`` (:func:`acquisition_record`: the operator,
its geometry with every length and angle, backend, projector, and the noise model with its dose) and
``geometry``, the same in one line (:func:`acquisition_text`; the report prints it). Each entry of ``models``
carries its own ``acquisition`` and, for a checkpoint, the model's ``config()`` under ``info["model"]``.

``ctrobust report`` reads it (:func:`ctrobust.evaluation.report.build_report`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from ctrobust.files import check_output_dir

__all__ = ["ResultFolder", "summary_record", "acquisition_record", "acquisition_text", "noise_record"]


def noise_record(noise=None) -> dict:
    """The measurement noise as JSON: ``{"model": "none"}`` (noise-free ``y = A x``) or the noise object's class
    with its numbers (``LogPoissonNoise``: ``photons`` I0, the dose; ``mu`` per pixel; ``read_noise`` photons)."""
    if noise is None:
        return {"model": "none"}
    rec = {"model": type(noise).__name__}
    for key in ("photons", "mu", "read_noise", "sigma", "level"):
        value = getattr(noise, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rec[key] = float(value)
    return rec


def acquisition_record(operator, noise=None) -> dict:
    """What the measurements were: ``{"operator", "domain_shape", "range_shape", "geometry"?, "backend"?,
    "projector"?, "operator_config"?, "noise"}``.

    ``geometry`` is the scan geometry's ``to_config()``: ``type`` (ParallelBeam2D / FanBeam2D), ``image_size``
    (pixels), ``n_angles``, ``n_detectors``, ``angle_range`` (radians) and for fan beam ``source_origin``,
    ``origin_detector`` and ``detector_spacing`` (pixels). Operators without a geometry (CS) give their
    ``to_config()`` as ``operator_config`` instead.
    """
    rec: dict = {"operator": type(operator).__name__,
                 "domain_shape": [int(s) for s in getattr(operator, "domain_shape", ())],
                 "range_shape": [int(s) for s in getattr(operator, "range_shape", ())]}
    geometry = getattr(operator, "geometry", None)
    if geometry is not None and hasattr(geometry, "to_config"):
        rec["geometry"] = geometry.to_config()
        for key in ("backend", "projector"):
            rec[key] = getattr(operator, key, None)
    else:
        try:
            rec["operator_config"] = operator.to_config()
        except (AttributeError, NotImplementedError):
            pass
    rec["noise"] = noise_record(noise)
    return rec


def acquisition_text(rec: Mapping) -> str:
    """One line of :func:`acquisition_record`, e.g. ``parallel beam, 64 x 64 px, 143 views on [0, 180 deg), 91
    detector bins; astra backend, linear projector; noise-free``."""
    import math

    g = rec.get("geometry")
    if g:
        kind = {"ParallelBeam2D": "parallel beam", "FanBeam2D": "fan beam"}.get(g.get("type"), str(g.get("type")))
        n = g.get("image_size")
        text = (f"{kind}, {n} x {n} px, {g.get('n_angles')} views on [0, {math.degrees(g.get('angle_range', 0)):g} deg), "
                f"{g.get('n_detectors')} detector bins")
        if g.get("type") == "FanBeam2D":
            text += (f", source-axis {g.get('source_origin'):.4g} px, axis-detector {g.get('origin_detector'):.4g} px, "
                     f"bin {g.get('detector_spacing'):.4g} px")
        text += f"; {rec.get('backend')} backend" + (f", {rec['projector']} projector" if rec.get("projector") else "")
    else:
        cfg = rec.get("operator_config") or {}
        extra = ", ".join(f"{k} {v}" for k, v in cfg.items() if k != "type")
        text = f"{rec.get('operator')} {tuple(rec.get('domain_shape', ()))} -> {tuple(rec.get('range_shape', ()))}"
        text += f" ({extra})" if extra else ""
    noise = rec.get("noise") or {"model": "none"}
    if noise.get("model") == "none":
        text += "; noise-free"
    else:
        text += f"; {noise['model']}" + (f" I0 = {noise['photons']:g} photons" if "photons" in noise else "")
    return text


def summary_record(command: str, config: Mapping, models: Sequence[Mapping] = (), summary: Sequence[Mapping] = (),
                   **tables) -> dict:
    """The ``summary.json`` record of one command run (the schema in the module docstring)."""
    from ctrobust import __version__

    return {"command": command, "ctrobust_version": __version__, "config": dict(config), "models": list(models),
            "summary": list(summary), **tables}


class ResultFolder:
    """An output folder: refused when non-empty unless ``force``; created only by :meth:`create`.

    Call :meth:`check` before the work (it creates nothing), :meth:`create` when the inputs are valid and
    the first file is due, then the ``write_*`` methods; :attr:`written` lists what was written.
    """

    def __init__(self, path: str | os.PathLike, force: bool = False):
        self.path = Path(path)
        self.force = bool(force)
        self.written: list[str] = []
        self.tables: dict[str, dict] = {}

    def check(self) -> "ResultFolder":
        check_output_dir(self.path, self.force)
        return self

    def create(self) -> "ResultFolder":
        self.check()
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def _note(self, name: str) -> Path:
        if name not in self.written:
            self.written.append(name)
        return self.path / name

    def write_csv(self, name: str, rows: Sequence[Mapping], columns=None) -> Path:
        from ctrobust.evaluation.report import write_csv

        path = write_csv(rows, self._note(name), columns)
        if columns is None:
            columns = list(dict.fromkeys(k for r in rows for k in r))
        self.tables[name] = {"columns": list(columns), "rows": len(rows)}
        return path

    def write_json(self, name: str, obj) -> Path:
        from ctrobust.evaluation.report import write_json

        return write_json(obj, self._note(name))

    def write_summary(self, command: str, config: Mapping, models=(), summary=(), **tables) -> Path:
        """``summary.json`` in the one schema (:func:`summary_record`), naming the CSV tables written so far."""
        from ctrobust.evaluation.report import SUMMARY_FILE

        if self.tables and "tables" not in tables:
            tables["tables"] = dict(self.tables)
        return self.write_json(SUMMARY_FILE, summary_record(command, config, models, summary, **tables))

    def figure(self, name: str) -> Path:
        """The path of figure ``name`` (written by a plotting function), noted as written."""
        return self._note(name)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)
