"""How strong is each min-max adversary design against a frozen network? (issue 25's table of designs)

A trained network f is frozen; each design of G (``MinMax(mode=...)``) is then trained exactly as during
min-max training (batches of 8 drawn from the 256 training phantoms with their dataset indices, one
training step of G per batch: the same ``loss`` / backward / ``after_step`` calls as the trainer, with
f's parameters never stepped) for ``--steps`` batches. On 16 training phantoms (each visited about
``steps * 8 / 256`` times; the ``memory`` design keeps directions only for training samples) the table
then gives the efficiency, (loss at G's perturbation - clean loss) / (the same for a 20-step
per-sample APGD attack), the same ratio for a random direction of G's size (the noise floor), the mean
|cos| between G's perturbations of two different samples (1 = one shared direction) and the seconds
per G step.

    python benchmarks/adversary_designs.py --checkpoint runs/demo/train/plain/last.pt
    python benchmarks/adversary_designs.py --checkpoint CKPT --modes shared,memory --steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ctrobust.errors import CtrobustError

from ctrobust.data import load_split
from ctrobust.training.checkpoint import load_model
from ctrobust.training.objectives import MinMax
from ctrobust.models.adversary import MODES


def measure(model, mode: str, steps: int, *, eps: float = 0.01, n_train: int = 256, batch: int = 8, n_eval: int = 16,
            seed: int = 0, **options) -> dict:
    """G of design ``mode`` trained ``steps`` batches against the frozen ``model``; its diagnostics on
    ``n_eval`` training phantoms (:meth:`MinMax.validation_metrics`)."""
    op = model.operator
    size = op.domain_shape[-1]
    train = load_split(None, "train", size=size, n_phantoms=n_train, seed=0)
    xs = torch.stack([train[i] for i in range(len(train))])
    for p in model.parameters():
        p.requires_grad_(False)
    objective = MinMax(eps=eps, mode=mode, seed=seed, **options)
    objective.setup(model, op)
    gen = torch.Generator().manual_seed(seed)
    model.eval()  # frozen: batch-norm statistics too
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randperm(len(xs), generator=gen)[:batch]
        x = xs[idx]
        objective.observe_batch(idx.tolist())
        total, _ = objective.loss(model, x, op(x), model)
        if total.requires_grad:
            total.backward()
        objective.after_step(model)
    seconds = (time.perf_counter() - start) / max(steps, 1)
    idx = list(range(n_eval))
    x = xs[idx]
    objective._last_batch = (x, op(x), idx)  # memory: measured on these training samples' directions
    metrics = objective.validation_metrics(model, x, op(x))
    visited = sum(1 for i in idx if i in objective.adversary.memory) if mode == "memory" else n_eval
    return {"mode": mode, "steps": steps, **options, **metrics, "seconds_per_g_step": seconds,
            "eval_samples_visited": visited}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the frozen network (a ctrobust checkpoint)")
    p.add_argument("--modes", default="shared,memory,conditioned,project,sphere,penalty",
                   help=f"designs to measure, of {', '.join(MODES)}; default %(default)s")
    p.add_argument("--steps", type=int, default=600, help="G training batches (the demo trains 600); default %(default)s")
    p.add_argument("--eps", type=float, default=0.01, help="relative radius; default %(default)s")
    p.add_argument("--json", default=None, help="append the rows as JSON lines here")
    args = p.parse_args(argv)
    rows = []
    for mode in args.modes.split(","):
        model, _ = load_model(args.checkpoint)
        options = {"g_lr": 1e-2} if mode == "conditioned" else {}
        row = measure(model, mode, args.steps, eps=args.eps, **options)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    print(f"\nfrozen f = {args.checkpoint}; {args.steps} G steps, eps {args.eps:g}; measured on 16 training phantoms")
    print(f"{'mode':<12} {'efficiency':>10} {'noise floor':>11} {'mean |cos|':>10} {'s/G step':>9}")
    for r in rows:
        print(f"{r['mode']:<12} {r['g_efficiency']:10.3f} {r['g_random_efficiency']:11.3f} {r['g_cosine']:10.3f} "
              f"{r['seconds_per_g_step']:9.3f}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    try:
        sys.exit(main())
    except CtrobustError as exc:  # a wrong objective name, a missing checkpoint: the message, not a traceback
        sys.exit(f"error: {exc}")
