"""Train a Learned Primal-Dual with options the command line does not expose (e.g. ``init="fbp"``), with exactly
``ctrobust train``'s data, objective and optimiser settings (the demo's: 150 steps, batch 8, seed 0).

    python -m experiments.lpd_vs_fbpconvnet.train_lpd --size 32 --angles 30 --objective minmax \\
        --init fbp --zero-init --out runs/lpd_fbp_minmax

The checkpoint is an ordinary ``ctrobust train`` checkpoint (model config type ``"lpd"``), so ``ctrobust attack
--checkpoint`` takes it.
"""

from __future__ import annotations

import argparse

from ctrobust.app.specs import TrainSpec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--angles", type=int, default=143)
    p.add_argument("--objective", default="plain")
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--init", default="zero", choices=("zero", "fbp"))
    p.add_argument("--zero-init", action="store_true", help="start the blocks' last layers at zero (f = initial iterate)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from ctrobust.app import train as app_train
    from ctrobust.models import unrolled

    spec = TrainSpec(model="lpd", size=args.size, angles=args.angles, objective=args.objective, eps=0.01,
                     max_steps=args.max_steps, seed=0, out=args.out, force=True, progress=False)
    options = {"init": args.init, "zero_init": args.zero_init}

    class Configured(unrolled.LearnedPrimalDual):  # run_train builds LearnedPrimalDual(operator, seed=...)
        def __init__(self, operator, **kw):
            super().__init__(operator, **{**options, **kw})

    original = unrolled.LearnedPrimalDual
    unrolled.LearnedPrimalDual = Configured
    try:
        return app_train.run_train(spec)
    finally:
        unrolled.LearnedPrimalDual = original


if __name__ == "__main__":
    main()
