"""Make the figures of the docs (docs/figures/*.png) from a low-dose `ctrobust demo` run.

    python docs/make_figures.py        # runs `ctrobust demo --photons 4096 --out runs/demo-lowdose` first if needed
    python docs/make_figures.py --demo runs/demo-lowdose     # an existing demo folder

Each figure is the demo's own PNG, shrunk to at most --max-width pixels and re-saved with a reduced
palette so that it stays under 200 KB in the repository. FIGURES lists what is copied from where; MADE_ELSEWHERE the figures other commands draw (the lambda
trade-off of docs/training.md, from the rows of benchmarks/robust_training.py kept in benchmarks/observed).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

#: docs/figures name -> path inside the demo folder
FIGURES = {
    "demo_operator.png": "operator.png",
    "demo_robustness_curve.png": "attack/robustness_curve.png",
    "demo_gallery.png": "attack/gallery.png",
    "demo_real_slice.png": "attack_real/gallery.png",
    "demo_training.png": "report.training.png",
}
#: docs/figures made by other commands from rows kept in the repository: name -> the command (run from the root)
MADE_ELSEWHERE = {
    "tradeoff_lambda.png": ["benchmarks/robust_training.py", "--table", "benchmarks/observed/robust_training_seed0.jsonl",
                            "--figure", "docs/figures/tradeoff_lambda.png"],
}
MAX_BYTES = 200_000
HERE = Path(__file__).resolve().parent


def shrink(source: Path, target: Path, max_width: int = 1100, max_bytes: int = MAX_BYTES) -> int:
    """Copy the PNG ``source`` to ``target``, at most ``max_width`` px wide, palette-quantised; returns its size."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    for width, colors in ((max_width, 256), (max_width * 3 // 4, 128), (max_width // 2, 64)):
        im = image
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        buf = io.BytesIO()
        im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes:
            break
    target.write_bytes(buf.getvalue())
    return buf.tell()


def make_figures(demo: Path, out: Path = HERE / "figures") -> dict[str, int]:
    """Shrink every figure of FIGURES from the demo folder ``demo`` into ``out``; returns name -> bytes."""
    missing = [rel for rel in FIGURES.values() if not (demo / rel).is_file()]
    if missing:
        raise SystemExit(f"{demo} lacks {', '.join(missing)}: is it a complete `ctrobust demo` folder?")
    out.mkdir(parents=True, exist_ok=True)
    return {name: shrink(demo / rel, out / name) for name, rel in FIGURES.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo-lowdose"),
                        help="a `ctrobust demo` folder (made by `ctrobust demo --photons 4096` when missing) "
                        "[runs/demo-lowdose]")
    parser.add_argument("--out", type=Path, default=HERE / "figures", help="where the figures go [docs/figures]")
    args = parser.parse_args(argv)
    if not (args.demo / "report.md").is_file():
        subprocess.run([sys.executable, "-m", "ctrobust", "demo", "--photons", "4096", "--out", str(args.demo)],
                       check=True)
    for name, size in make_figures(args.demo, args.out).items():
        print(f"{args.out / name}: {size / 1000:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
