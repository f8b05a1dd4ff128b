"""`ctrobust demo` (placeholder: being written; replace this whole module)."""

from ctrobust.errors import CtrobustError


def add_parser(subparsers):
    p = subparsers.add_parser("demo", help="(not yet available)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    raise CtrobustError("'demo' is not implemented yet")
