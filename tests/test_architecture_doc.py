"""docs/architecture.md cannot fall behind the tree: its module table is generated from the package
(one row per module: path and the first line of its docstring) and this test fails when they differ.

Regenerate after adding, moving or re-documenting a module::

    python tests/test_architecture_doc.py --write
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
BEGIN, END = "<!-- module-table:begin (generated: python tests/test_architecture_doc.py --write) -->", "<!-- module-table:end -->"
LAYER_ORDER = ("", "cli", "app", "training", "evaluation", "reconstruction", "models", "attacks", "operators", "data")


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return first.replace("|", "\\|") or "(no docstring)"


def module_table() -> str:
    root = REPO / "ctrobust"
    files = sorted(root.rglob("*.py"), key=lambda p: (LAYER_ORDER.index(p.parent.name if p.parent != root else ""),
                                                       p.name != "__init__.py", p.name))
    rows = ["| module | what it holds |", "|---|---|"]
    for p in files:
        rows.append(f"| `{p.relative_to(root).as_posix()}` | {_summary(p)} |")
    return "\n".join(rows)


def _current() -> str:
    text = DOC.read_text()
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    assert match, f"{DOC} has no generated module table (markers {BEGIN!r} ... {END!r})"
    return match.group(1)


def test_module_table_matches_the_tree():
    assert _current() == module_table(), ("docs/architecture.md's module table is out of date: run "
                                          "python tests/test_architecture_doc.py --write")


def test_paths_named_in_the_doc_exist():
    text = DOC.read_text()
    missing = []
    for path, name in re.findall(r"`(ctrobust/[\w/]+\.py)(?::(\w+))?", text):
        file = REPO / path
        if not file.exists():
            missing.append(path)
        elif name and not re.search(rf"^(?:def|class) {name}\b|^{name}\s*[:=]|^    def {name}\b", file.read_text(), re.M):
            missing.append(f"{path}:{name}")
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        text = DOC.read_text()
        new = re.sub(re.escape(BEGIN) + r"\n.*?" + re.escape(END), lambda m: f"{BEGIN}\n{module_table()}\n{END}", text,
                     flags=re.S)
        DOC.write_text(new)
        print(f"wrote {DOC}")
