"""The ``ctrobust`` command line: one module per subcommand, each a thin layer over the library.

Each subcommand module defines ``add_parser(subparsers)`` (which registers its parser and sets
``func=run``) and ``run(args) -> int``. ``main(argv=None)`` is callable from tests.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ctrobust import __version__
from ctrobust.errors import CtrobustError

__all__ = ["main", "build_parser"]

# Subcommand name -> module in ctrobust.cli, in the order ``--help`` lists them.
COMMANDS = (
    "demo",
    "prepare-dicom",
    "make-phantoms",
    "train",
    "attack",
    "evaluate",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrobust",
        description="Robust deep-learning CT reconstruction: prepare data, train, attack, evaluate, report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ctrobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"ctrobust.cli.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CtrobustError as exc:
        print(f"ctrobust {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ctrobust {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
