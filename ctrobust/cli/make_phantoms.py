"""``ctrobust make-phantoms``: the options are :class:`ctrobust.app.MakePhantomsSpec`, the work
:func:`ctrobust.app.run_make_phantoms` (see docs/cli/make-phantoms.md)."""

from __future__ import annotations

from ctrobust.app.specs import MakePhantomsSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "make-phantoms", MakePhantomsSpec, run=run,
        help="write random CT-like ellipse phantoms (and Shepp-Logan) as an HDF5 dataset",
        description="Write random-ellipse phantoms in the prepared-slice format, so every command accepts them "
        "as --data. The defaults write exactly the built-in data used when --data is omitted.")


def run(args) -> int:
    from ctrobust.app.data import run_make_phantoms

    info = run_make_phantoms(spec_from_args(MakePhantomsSpec, args))
    c = info["counts"]
    print(f"wrote {info['out']}: {c['train']} train / {c['val']} val / {c['test']} test slices of "
          f"{info['image_size']}x{info['image_size']} (seed {info['seed']})")
    return 0
