"""Bring your own network (docs/models.md): train it with ctrobust, reload it from its checkpoint, attack it
with ``ctrobust attack``.

    python examples/byo_network/train_and_attack.py --out runs/byo           # a few minutes on a laptop CPU
    python examples/byo_network/train_and_attack.py --out runs/byo --quick   # seconds (the test runs this)

The network lives in ``mynets.py`` beside this script; it is named by its import path ``mynets:make_net``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # makes ``mynets`` importable in this process


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/byo", help="output folder (default: runs/byo)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a few steps")
    args = parser.parse_args(argv)
    out = Path(args.out)
    size, angles, steps, n_train = (24, 20, 4, 16) if args.quick else (64, 60, 300, 256)

    import ctrobust
    from ctrobust.data import load_split
    from ctrobust.models import build_model
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.operators.radon import RadonTransform
    from ctrobust.training import build_objective, fit

    # 1. build: the registry calls mynets.make_net(operator, width=8) and records how to rebuild it
    operator = RadonTransform(ParallelBeam2D(size, angles))
    model = build_model({"type": "mynets:make_net", "width": 8}, operator, seed=0)

    # 2. train with any objective; the checkpoint stores "mynets:make_net", {"width": 8} and the weights
    train = load_split(None, "train", size=size, n_phantoms=n_train, seed=0)
    val = load_split(None, "val", size=size, n_phantoms=8, seed=0)
    fit(model, operator, build_objective("minmax", eps=0.01), train, val, max_steps=steps, batch_size=8,
        out=out / "run", force=True, progress=False)

    # 3. reload from the file alone (imports mynets, nothing else from the file)
    again = ctrobust.load_checkpoint(out / "run" / "best.pt")
    print(f"reloaded {type(again).__name__} from {out / 'run' / 'best.pt'}")

    # 4. the command line rebuilds it the same way: mynets only needs to be on PYTHONPATH
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)}
    attack = [sys.executable, "-m", "ctrobust", "attack", "--checkpoint", str(out / "run" / "best.pt"),
              "--eps-grid", "0,0.01", "--n-samples", "2" if args.quick else "16", "--steps", "3" if args.quick else "100",
              "--out", str(out / "attack"), "--force", "--no-progress"]
    attack += ["--no-linearization", "--no-fbp"] if args.quick else []
    subprocess.run(attack, check=True, env=env)
    summary = json.loads((out / "attack" / "summary.json").read_text())
    print("attacked:", ", ".join(m["label"] for m in summary["models"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
