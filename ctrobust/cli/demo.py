"""``ctrobust demo``: the main job end to end on built-in phantoms.

1. the operator: project Shepp-Logan, reconstruct it by FBP, check the adjoint (``operator.png``,
   ``operator.json``);
2. train a small FBPConvNet twice on built-in phantoms: plainly and with the min-max objective
   (``plain/``, ``minmax/``; ``ctrobust train``);
3. attack both and FBP with the default attack (APGD, warm-started) over an eps grid (``attack/``; ``ctrobust attack``);
4. one report with the tables and figures (``report.md``; ``ctrobust report``).

Each stage is the corresponding subcommand run with the demo's settings, so the folders it writes are
exactly what those commands write.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ctrobust.cli.argtypes import eps_list, nonneg_float, nonneg_int, positive_int
from ctrobust.errors import CtrobustError

QUICK = {"size": 32, "angles": 30, "steps": 4, "channels": 4, "depth": 2, "n_test": 2, "attack_steps": 3,
         "eps_grid": [0.0, 0.01]}


def add_parser(subparsers):
    from ctrobust.attacks import DEFAULT_STEPS

    p = subparsers.add_parser(
        "demo",
        help="the main job on built-in phantoms: operator check, plain + min-max training, APGD attack, report",
        description=__doc__.split("\n\n")[0] + " Writes figures (PNG), tables (CSV/JSON) and report.md to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="output folder (refused if it exists and is not empty, unless --force)")
    p.add_argument("--size", type=positive_int, default=64, help="image size N in pixels (N x N phantoms)")
    p.add_argument("--angles", type=positive_int, default=143, help="number of parallel-beam views on [0, pi)")
    p.add_argument("--steps", type=positive_int, default=150, help="optimiser steps per training run")
    p.add_argument("--channels", type=positive_int, default=16, help="U-Net channels at the first level")
    p.add_argument("--depth", type=positive_int, default=3, help="U-Net poolings")
    p.add_argument("--eps", type=nonneg_float, default=0.01,
                   help="min-max training radius, relative to ||y||_2 per sample (0.01 = 1 %% of the sinogram norm)")
    p.add_argument("--eps-grid", type=eps_list, default=[0.0, 0.005, 0.01, 0.02, 0.04], metavar="E1,E2,...",
                   help="attack radii, relative to ||y||_2 per sample")
    p.add_argument("--attack-steps", type=positive_int, default=DEFAULT_STEPS,
                   help="steps of the attack (APGD) per eps, each one forward and one backward pass of the model")
    p.add_argument("--n-test", type=positive_int, default=8, help="test phantoms attacked")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (>= 0) of model initialisation, data order and attacks")
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA when available), cpu or cuda")
    p.add_argument("--quick", action="store_true",
                   help="a seconds-long smoke run (32 px, 30 views, 4 steps, tiny U-Net) overriding the sizes above")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out, replacing earlier demo results")
    p.set_defaults(func=run)
    return p


def check_operator(size: int, angles: int, out: Path) -> dict:
    """Project and FBP-reconstruct Shepp-Logan; write ``operator.png`` / ``operator.json``; return the numbers."""
    import torch

    from ctrobust.data.phantoms import shepp_logan
    from ctrobust.geometry import ParallelBeam2D
    from ctrobust.metrics import psnr, relative_error, ssim
    from ctrobust.operators.radon import RadonTransform
    from ctrobust.report import write_json

    start = time.perf_counter()
    operator = RadonTransform(ParallelBeam2D(size, angles))
    build_s = time.perf_counter() - start
    x = torch.from_numpy(shepp_logan(size))[None, None].float()
    with torch.no_grad():
        y = operator(x)
        fbp = operator.fbp(y)
    numbers = {
        "geometry": operator.geometry.to_dict(),
        "backend": operator.backend,
        "operator_build_s": round(build_s, 3),
        "operator_norm": operator.norm(iterations=30),
        "adjoint_dot_test_float64": operator.dot_test(dtype=torch.float64),
        "fbp_relative_error": float(relative_error(fbp, x)[0]),
        "fbp_psnr_db": float(psnr(fbp.clamp(0, 1), x)[0]),
        "fbp_ssim": float(ssim(fbp.clamp(0, 1), x)[0]),
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, img, title in zip(axes, (x[0, 0], y[0, 0], fbp[0, 0]),
                              ("Shepp-Logan x", f"sinogram A x ({angles} views x {operator.geometry.n_detectors} bins)",
                               f"FBP (rel. error {numbers['fbp_relative_error']:.3f})")):
        ax.imshow(img.numpy(), cmap="gray", aspect="auto" if img is y[0, 0] else "equal")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "operator.png", dpi=110)
    plt.close(fig)
    write_json(numbers, out / "operator.json")
    return numbers


def _stage(title: str, argv: list[str]) -> None:
    from ctrobust.cli import main

    print(f"\n== {title}\n   ctrobust {' '.join(argv)}", file=sys.stderr)
    status = main(argv)
    if status != 0:
        raise CtrobustError(f"stage '{title}' failed (exit status {status}); see the message above")


def run(args) -> int:
    settings = {k: getattr(args, k) for k in ("size", "angles", "steps", "channels", "depth", "n_test",
                                               "attack_steps", "eps_grid")}
    if args.quick:
        settings.update(QUICK)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CtrobustError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise CtrobustError(f"--out {out} is not empty; pass --force to replace the earlier demo results, "
                            "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    force = ["--force"] if args.force else []
    s = settings

    print(f"== operator: Shepp-Logan at {s['size']} px, {s['angles']} views", file=sys.stderr)
    numbers = check_operator(s["size"], s["angles"], out)
    print(f"   FBP relative error {numbers['fbp_relative_error']:.4f}, PSNR {numbers['fbp_psnr_db']:.2f} dB, "
          f"adjoint dot test {numbers['adjoint_dot_test_float64']:.1e}", file=sys.stderr)

    common = ["--angles", str(s["angles"]), "--size", str(s["size"]), "--max-steps", str(s["steps"]),
              "--channels", str(s["channels"]), "--depth", str(s["depth"]), "--seed", str(args.seed),
              "--device", args.device, *force]
    _stage("train plain FBPConvNet", ["train", "--objective", "plain", "--out", str(out / "plain"), *common])
    _stage("train min-max FBPConvNet", ["train", "--objective", "minmax", "--eps", str(args.eps),
                                        "--out", str(out / "minmax"), *common])
    _stage("attack (APGD)", ["attack", "--checkpoint", str(out / "plain" / "best.pt"),
                          "--checkpoint", str(out / "minmax" / "best.pt"), "--eps-grid", ",".join(f"{e:g}" for e in s["eps_grid"]),
                          "--eps", str(args.eps), "--steps", str(s["attack_steps"]), "--n-samples", str(s["n_test"]),
                          "--seed", str(args.seed), "--device", args.device, "--out", str(out / "attack"), *force])
    _stage("report", ["report", str(out / "attack"), "--out", str(out / "report.md"), *force])
    with open(out / "attack" / "summary.json") as fh:
        summary = json.load(fh)
    print(f"\ndemo done: {out}/ holds operator.png, plain/, minmax/, attack/ (robustness_curve.png, gallery.png, "
          f"summary.csv) and report.md ({len(summary['summary'])} summary rows)", file=sys.stderr)
    return 0
