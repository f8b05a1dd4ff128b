"""``ctrobust benchmark``: the options are :class:`ctrobust.app.BenchmarkSpec`, the work :func:`ctrobust.app.run_benchmark`.

Trains the models of ``--models`` that are missing, attacks every model (and each ``--checkpoint``) under the
protocol's attack, and writes ``leaderboard.csv``, ``.json``, ``.md`` and ``.html`` into ``--out``;
``--list`` prints the protocols.
"""

from __future__ import annotations

import sys

from ctrobust.app.specs import BenchmarkSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "benchmark", BenchmarkSpec, run=run,
        help="a robustness leaderboard under a named protocol (train what is missing, attack, rank)",
        description="Run a named protocol (geometry, dose, data, eps grid, attack budget; --list shows them): "
        "train the networks of --models that --out does not hold yet, attack every model and every --checkpoint "
        "with the protocol's attack, and write leaderboard.csv, .json, .md and .html (robustness curves and "
        "galleries) into --out. A killed run continues where it stopped when run again; a later run on the same "
        "--out adds rows.")


def run(args) -> int:
    from ctrobust.app.benchmark import list_protocols, run_benchmark

    spec = spec_from_args(BenchmarkSpec, args)
    if spec.show_list:
        for name, line in list_protocols():
            print(f"{name}: {line}")
        return 0
    result = run_benchmark(spec)
    print(result.text())
    print(f"wrote {result.out}/: {', '.join(p.name for p in result.written)}", file=sys.stderr)
    return 0
