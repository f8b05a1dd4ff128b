"""Every ``ctrobust`` command line in the docs (code blocks and inline code) and the experiments' shell scripts
names flags, commands and choices the command-line parser knows: a renamed or removed flag (``--rule`` for
``--attack``) cannot linger in a line users paste.

Lines with placeholders (``SEED``, ``...``, ``<x>``) are skipped; shell variables of the scripts take a value of
their kind.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from ctrobust.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
#: values for the scripts' shell variables (others become 1)
SHELL_VALUES = {"MODELS": "fbp,fbpconvnet-plain", "OUT": "runs/x", "run": "runs/r", "seed": "0", "SEED": "0"}
#: the parser's errors that mean the line names a flag, a command or a choice that does not exist
STALE = ("unrecognized arguments", "invalid choice", "ambiguous option")
PLACEHOLDER = re.compile(r"(\.\.\.|[<>\[\]{}]|(?<![-\w])[A-Z][A-Z_]{1,}(?![\w=]))")


def _blocks(path: Path):
    """(line number, text) of the lines a user would paste: fenced code and inline code spans in Markdown,
    everything in a script."""
    fenced = path.suffix == ".sh"
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if path.suffix == ".md" and line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield number, line
        else:
            for span in re.findall(r"`(ctrobust [^`]+)`", line):
                yield number, span


def _commands(path: Path):
    lines = list(_blocks(path))
    i = 0
    while i < len(lines):
        number, line = lines[i]
        match = re.match(r"\s*(?:\$\s+)?(?:\w+=\S+\s+)*(ctrobust\s+[a-z][a-z-]*(?:\s.*)?)$", line)
        if match:
            text = match.group(1)
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i][1].strip()
            text = re.sub(r"\s+(?:\d?>>?|&&|\|\||\||;|#|&).*$", "", text)
            text = re.sub(r'\$\{?(\w+)\}?', lambda m: SHELL_VALUES.get(m.group(1), "1"), text)
            yield number, text
        i += 1


def _all():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "experiments").rglob("*.sh")),
             *sorted((ROOT / "experiments").rglob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]
    for path in files:
        for number, text in _commands(path):
            if "$@" in text or PLACEHOLDER.search(text.split(None, 2)[-1] if len(text.split()) > 2 else ""):
                continue
            yield pytest.param(text, id=f"{path.relative_to(ROOT)}:{number}")


CASES = list(_all())


def test_there_are_commands_to_check():
    assert len(CASES) > 80  # the scan found the docs' commands (a broken pattern would find none)


@pytest.mark.parametrize("text", CASES)
def test_documented_command_parses(text):
    argv = shlex.split(text)[1:]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""
        # a stale spelling: an unknown flag or command, or a flag prefix that has become ambiguous (a line that
        # only names a command or a flag, without its required arguments or value, is a mention, not a command)
        assert not (exc.code and any(s in message for s in STALE)), f"{text}\n{message}"
