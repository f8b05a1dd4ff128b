"""DCT sub-matrix compressed sensing (ill conditioned): plain, weight-decay, Parseval and min-max networks, robustness curves under APGD.

``python -m experiments.cs_dct_submatrix.run [--quick] [--out DIR] [--force] [--set dataset=faces ...]`` (see README.md;
the shared runner and its config keys are in :mod:`experiments._cs`).
"""

from __future__ import annotations

import sys

from experiments._cs import cs_main


def main(argv=None) -> int:
    return cs_main("cs_dct_submatrix", "DCT sub-matrix compressed sensing", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
