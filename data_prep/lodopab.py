#!/usr/bin/env python
"""Convert LoDoPaB-CT ground-truth HDF5 files into a ctrobust prepared-slice file.

    python data_prep/lodopab.py /data/lodopab --out lodopab.h5 --size 256

See data_prep/README.md (what to download) and ctrobust/data/lodopab.py (the conversion).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from ctrobust.data.lodopab import NATIVE_SIZE

    p = argparse.ArgumentParser(
        prog="lodopab.py", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="folder with ground_truth_{train,validation,test}_NNN.hdf5")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--size", type=int, default=NATIVE_SIZE, help="output image side in pixels (362 = LoDoPaB's grid)")
    p.add_argument("--window", default="native",
                   help="'native' keeps LoDoPaB's [0, 1] attenuation scaling; or a preset (abdomen, lung, bone, "
                        "brain, full) or LEVEL,WIDTH in HU")
    p.add_argument("--max-per-part", type=int, default=None, help="keep at most this many slices per part")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    return p


def main(argv=None) -> int:
    from ctrobust.data.lodopab import convert_lodopab
    from ctrobust.errors import CtrobustError

    args = build_parser().parse_args(argv)
    try:
        info = convert_lodopab(args.source, args.out, size=args.size, window=args.window,
                               max_per_part=args.max_per_part, force=args.force)
    except CtrobustError as exc:
        print(f"lodopab.py: error: {exc}", file=sys.stderr)
        return 1
    c = info["counts"]
    print(f"wrote {info['out']}: {c['train']} train / {c['val']} val / {c['test']} test slices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
