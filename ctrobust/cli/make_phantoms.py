"""`ctrobust make-phantoms` (placeholder: being written; replace this whole module)."""

from ctrobust.errors import CtrobustError


def add_parser(subparsers):
    p = subparsers.add_parser("make-phantoms", help="(not yet available)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    raise CtrobustError("'make-phantoms' is not implemented yet")
