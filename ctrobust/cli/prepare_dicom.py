"""`ctrobust prepare-dicom` (placeholder: being written; replace this whole module)."""

from ctrobust.errors import CtrobustError


def add_parser(subparsers):
    p = subparsers.add_parser("prepare-dicom", help="(not yet available)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    raise CtrobustError("'prepare-dicom' is not implemented yet")
