"""Gaussian compressed sensing (well conditioned): plain, weight-decay, Parseval and min-max networks, PGA robustness curves.

``python -m experiments.cs_gaussian.run [--quick] [--out DIR] [--force] [--set dataset=faces ...]`` (see README.md;
the shared runner and its config keys are in :mod:`experiments._cs`).
"""

from __future__ import annotations

import sys

from experiments import _common as C
from experiments._cs import run_cs

NAME = "cs_gaussian"
TITLE = "Gaussian compressed sensing"


def body(cfg, out, args):
    return run_cs(cfg, out, args, title=TITLE)


def main(argv=None) -> int:
    return C.run_main(NAME, __doc__.splitlines()[0], body, argv)


if __name__ == "__main__":
    sys.exit(main())
