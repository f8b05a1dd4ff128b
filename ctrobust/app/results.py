"""The result folder every command writes through: checked before any work, atomic files, one summary schema.

:class:`ResultFolder` wraps :mod:`ctrobust.files` (the one atomic writer and the one non-empty-folder check)
and :mod:`ctrobust.evaluation.report` (CSV / JSON / PNG writers). Its ``summary.json`` has one schema for every
command::

    {"command": "attack" | "evaluate" | "demo" | ..., "ctrobust_version": "...",
     "config": {...the command's settings...}, "models": [{"label", "source", "kind", "info"}, ...],
     "summary": [{"model", "condition", "eps"?, "n", "<metric>_mean", "<metric>_std", ...}, ...],
     ...command-specific tables ("verification", "shift", "features")}

``ctrobust report`` reads it (:func:`ctrobust.evaluation.report.build_report`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from ctrobust.files import check_output_dir

__all__ = ["ResultFolder", "summary_record"]


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

        return write_csv(rows, self._note(name), columns)

    def write_json(self, name: str, obj) -> Path:
        from ctrobust.evaluation.report import write_json

        return write_json(obj, self._note(name))

    def write_summary(self, command: str, config: Mapping, models=(), summary=(), **tables) -> Path:
        """``summary.json`` in the one schema (:func:`summary_record`)."""
        from ctrobust.evaluation.report import SUMMARY_FILE

        return self.write_json(SUMMARY_FILE, summary_record(command, config, models, summary, **tables))

    def figure(self, name: str) -> Path:
        """The path of figure ``name`` (written by a plotting function), noted as written."""
        return self._note(name)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)
