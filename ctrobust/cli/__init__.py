"""The ``ctrobust`` command line: a thin adapter from the specs of :mod:`ctrobust.app` to argparse.

Each subcommand module defines ``add_parser(subparsers)``, which registers the options of its spec through
:func:`ctrobust.cli.adapter.add_spec_parser`, and ``run(args) -> int``, which builds the spec, calls its
``ctrobust.app.run_*`` function and prints the result. No subcommand module imports another one.
``main(argv=None)`` is callable from tests.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from ctrobust import __version__
from ctrobust.errors import CtrobustError

__all__ = ["main", "build_parser"]

# Subcommand name -> module in ctrobust.cli, in the order ``--help`` lists them.
COMMANDS = (
    "demo",
    "prepare-dicom",
    "prepare-volumes",
    "make-phantoms",
    "train",
    "attack",
    "evaluate",
    "report",
    "benchmark",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrobust",
        description="Robust deep-learning CT reconstruction: prepare data, train, attack, evaluate, report.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"ctrobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"ctrobust.cli.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM under :func:`main`, so that ``finally`` blocks and
    ``except KeyboardInterrupt`` clean-ups (temporary files, the trainer's last.pt) run as on Ctrl-C."""

    exit_code = 143  # 128 + SIGTERM


def _on_sigterm(signum, frame):
    raise Terminated(f"terminated by signal {signum} (SIGTERM)")


def _install_sigterm():
    """Make SIGTERM raise :class:`Terminated`; returns the previous handler (None if not installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:  # the caller wants SIGTERM ignored: leave it so
        return None
    signal.signal(signal.SIGTERM, _on_sigterm)
    return previous


def flag_spelling(message: str) -> str:
    """A library message in the command line's spelling: the keyword hints ``name=True`` of the library
    (``pass force=True``) become the flags ``--name`` (``pass --force``); the rest is left as it is."""
    import re

    return re.sub(r"\b([a-z][a-z0-9_]*)=True\b", lambda m: "--" + m.group(1).replace("_", "-"), message)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage error, 130 interrupted by
    Ctrl-C, 143 terminated by SIGTERM)."""
    previous = _install_sigterm()
    prog = "ctrobust"  # "ctrobust COMMAND" once the command line is parsed
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        prog = f"ctrobust {args.command}"
        return int(args.func(args) or 0)
    except CtrobustError as exc:
        print(f"{prog}: error: {flag_spelling(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # stdout closed early (`ctrobust ... | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a killed pipe writer
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"{prog}: {what}", file=sys.stderr)
        return Terminated.exit_code if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
