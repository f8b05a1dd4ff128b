"""The application layer: one spec and one ``run_*`` function per command, for Python and the command line.

Each command of ``ctrobust`` is a frozen spec dataclass (:mod:`ctrobust.app.specs`: every field carries its
help, unit, choices and its one default) and a function that runs it and returns a result object::

    from ctrobust.app import TrainSpec, AttackSpec, run_train, run_attack

    run_train(TrainSpec(angles=60, size=64, max_steps=200, out="runs/plain"))
    result = run_attack(AttackSpec(checkpoint=("runs/plain/best.pt",), eps_grid=(0, 0.01, 0.02),
                                   out="results/attack"))
    print(result.text())

Every command writes through one result-folder helper (:class:`~ctrobust.app.results.ResultFolder`:
checked before the work, atomic files, one ``summary.json`` schema). The command line
(:mod:`ctrobust.cli`) is a generic adapter from these specs to argparse; the demo and the experiments call
the ``run_*`` functions with specs.
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

_EXPORTS = {
    "TrainSpec": "ctrobust.app.specs",
    "AttackSpec": "ctrobust.app.specs",
    "EvaluateSpec": "ctrobust.app.specs",
    "PrepareDicomSpec": "ctrobust.app.specs",
    "PrepareVolumesSpec": "ctrobust.app.specs",
    "MakePhantomsSpec": "ctrobust.app.specs",
    "DemoSpec": "ctrobust.app.specs",
    "ReportSpec": "ctrobust.app.specs",
    "BenchmarkSpec": "ctrobust.app.specs",
    "run_train": "ctrobust.app.train",
    "run_attack": "ctrobust.app.attack",
    "AttackRunResult": "ctrobust.app.attack",
    "run_evaluate": "ctrobust.app.evaluate",
    "EvaluateResult": "ctrobust.app.evaluate",
    "run_prepare_dicom": "ctrobust.app.data",
    "run_prepare_volumes": "ctrobust.app.data",
    "run_make_phantoms": "ctrobust.app.data",
    "run_demo": "ctrobust.app.demo",
    "DemoResult": "ctrobust.app.demo",
    "run_report": "ctrobust.app.report",
    "ResultFolder": "ctrobust.app.results",
    "run_benchmark": "ctrobust.app.benchmark",
    "BenchmarkResult": "ctrobust.app.benchmark",
}

__all__ = list(_EXPORTS)
#: modules reachable as attributes on first use
SUBMODULES = ('acquisition', 'attack', 'benchmark', 'data', 'demo', 'evaluate', 'inputs', 'report', 'results', 'spec', 'specs', 'train')
__getattr__ = lazy_getattr(__name__, _EXPORTS, globals(), SUBMODULES)
