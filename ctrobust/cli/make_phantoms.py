"""`ctrobust make-phantoms`: random CT-like phantoms as a prepared-slice HDF5 file (see docs/cli/make-phantoms.md)."""

from __future__ import annotations

import argparse
import inspect


def _defaults():
    from ctrobust.data.make import make_phantoms

    return {k: v.default for k, v in inspect.signature(make_phantoms).parameters.items()
            if v.default is not inspect.Parameter.empty}


def add_parser(subparsers):
    d = _defaults()
    p = subparsers.add_parser(
        "make-phantoms",
        help="write random CT-like ellipse phantoms (and Shepp-Logan) as an HDF5 dataset",
        description="Write random-ellipse phantoms in the prepared-slice format, so every command accepts them "
                    "as --data. The defaults write exactly the built-in data used when --data is omitted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DATASET.h5", help="output HDF5 file")
    p.add_argument("--n", type=int, default=d["n"], help="number of random phantoms over all splits")
    p.add_argument("--size", type=int, default=d["size"], help="image side in pixels")
    p.add_argument("--seed", type=int, default=d["seed"], help="base seed (each split derives its own)")
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"], help="fraction of phantoms in val")
    p.add_argument("--test-fraction", type=float, default=d["test_fraction"], help="fraction of phantoms in test")
    p.add_argument("--no-shepp-logan", dest="shepp_logan", action="store_false",
                   help="do not append the Shepp-Logan phantom as the last test slice")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ctrobust.data.make import make_phantoms
    from ctrobust.errors import CtrobustError

    try:
        info = make_phantoms(args.out, n=args.n, size=args.size, seed=args.seed, val_fraction=args.val_fraction,
                             test_fraction=args.test_fraction, shepp_logan=args.shepp_logan, force=args.force,
                             progress=False if args.no_progress else None)
    except ValueError as exc:
        raise CtrobustError(str(exc)) from None
    c = info["counts"]
    print(f"wrote {info['out']}: {c['train']} train / {c['val']} val / {c['test']} test slices of "
          f"{info['image_size']}x{info['image_size']} (seed {info['seed']})")
    return 0
