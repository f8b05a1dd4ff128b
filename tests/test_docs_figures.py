"""The docs' figures: every image a page links exists and stays small, and docs/make_figures.py (the
command the docs give for them) shrinks a demo's PNGs under the limit."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def load_make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linked_figures_exist_and_are_small():
    links = [(page, target) for page in PAGES
             for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))]
    assert any("figures/" in t for _, t in links), "the docs show no figures"
    for page, target in links:
        path = (page.parent / target).resolve()
        assert path.is_file(), f"{page.relative_to(ROOT)} links a missing figure {target}"
        assert path.stat().st_size < 200_000, f"{target}: {path.stat().st_size} bytes"
    mf = load_make_figures()
    made = set(mf.FIGURES) | set(mf.MADE_ELSEWHERE)
    on_disk = {p.name for p in (ROOT / "docs" / "figures").glob("*.png")}
    assert on_disk <= made, f"figures no command makes: {on_disk - made}"  # every figure has its recipe
    for name, command in mf.MADE_ELSEWHERE.items():  # the recipe's script and inputs are in the repository
        assert command[-1] == f"docs/figures/{name}", command
        for arg in command[:-1]:
            if "/" in arg:
                assert (ROOT / arg).is_file(), f"{name}: its command needs {arg}"


def test_make_figures_shrinks_a_demo(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    mf = load_make_figures()
    demo = tmp_path / "demo"
    rng = np.random.default_rng(0)
    for rel in mf.FIGURES.values():
        (demo / rel).parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(demo / rel, rng.random((400, 1300, 3)))  # noise: a PNG far above the limit
    assert max((demo / rel).stat().st_size for rel in mf.FIGURES.values()) > mf.MAX_BYTES
    sizes = mf.make_figures(demo, tmp_path / "figures")
    assert set(sizes) == set(mf.FIGURES)
    for name, size in sizes.items():
        data = (tmp_path / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) == size <= mf.MAX_BYTES
    (demo / "operator.png").unlink()
    with pytest.raises(SystemExit, match="operator.png"):
        mf.make_figures(demo, tmp_path / "figures")
