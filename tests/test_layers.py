"""The floor plan: imports point down the layers of docs/architecture.md, nothing imports upward, no cycles.

Read from the source (every ``import`` / ``from ... import``, function-level ones included), so a lazy
import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ctrobust"

#: the layers, top to bottom; a module may import its own layer and any layer below it
LAYERS = ("cli", "app", "training", "evaluation", "reconstruction", "models", "attacks", "operators", "data", "")
#: modules allowed at the package root: infrastructure and the face, no numerics
ROOT_MODULES = {"__init__", "__main__", "_lazy", "cache", "errors", "files", "progress", "seeding"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ctrobust modules ``path`` imports (``from ctrobust import x`` counts as ``ctrobust.x``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ctrobust")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("ctrobust"):
            if node.module == "ctrobust":
                out |= {f"ctrobust.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else ""
    return LAYERS.index(top)


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def test_root_holds_only_infrastructure():
    stray = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in ROOT_MODULES)
    assert not stray, f"numerical modules at the package root (move them into their layer): {stray}"
    packages = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(packages) == sorted(layer for layer in LAYERS if layer)


def _upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, imports in graph.items():
        for target in imports:
            if target in ("ctrobust", "ctrobust.__version__") or module == "ctrobust.__main__":
                continue  # the version string; ``python -m ctrobust`` is the command line's entry point
            if _layer(target) < _layer(module):
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def test_no_module_imports_a_higher_layer():
    bad = _upward(_graph())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    modules = set(graph)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m and not m.startswith(r + ".") and not r.startswith(m + ".")}
             for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_upward_import_is_caught(tmp_path):
    """The rule itself: a planted upward import (parsed from a file, as the tree's are) is reported."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from ctrobust.training import fit\n")
    graph = {**_graph(), "ctrobust.operators._planted_upward": _imports(planted)}
    assert _upward(graph) == ["ctrobust.operators._planted_upward -> ctrobust.training"]


def test_building_the_parser_imports_no_torch():
    code = ("import sys; from ctrobust.cli import build_parser; build_parser(); "
            "heavy = sorted(m for m in ('torch', 'numpy', 'ctrobust.training.trainer', 'astra', 'odl') if m in sys.modules); "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"building the parser imported {out}"
