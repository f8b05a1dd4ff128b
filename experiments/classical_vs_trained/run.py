"""Classical vs un-trained vs trained CT reconstruction, clean and under the same attack (APGD).

``python -m experiments.classical_vs_trained.run [--quick] [--out DIR] [--force]`` (see README.md).

On built-in random-ellipse phantoms (``image_size`` px, ``n_angles`` parallel-beam views, relative
Gaussian noise ``noise`` on every measurement):

- FBP (Ram-Lak), the classical linear baseline;
- TV by Chambolle-Pock (``ctrobust.reconstruction.classical.tv_reconstruction``, ``tv_tau``, ``tv_iterations`` unrolled
  iterations: the attack differentiates through them);
- the deep image prior (``ctrobust.reconstruction.classical.deep_image_prior``: un-trained U-Net with early stopping on
  5 % held-out bins; attacked through its unrolled Adam steps, so only ``dip_samples`` images and
  ``dip_attack_steps`` PGA steps, it is by far the most expensive);
- FBPConvNet trained here for ``train_steps`` Adam steps on ``n_train`` phantoms (plain MSE).

Every method is attacked with ``ctrobust.attacks.pga_attack`` (target: the truth, l2 ball of radius
``eps * ||y||_2``) at each eps of ``eps_grid``. Writes ``samples.csv`` (per method, eps and image),
``summary.csv`` / ``summary.json`` (means) and ``figure.png`` (relative error and SSIM vs eps, and
example reconstructions).
"""

from __future__ import annotations

import sys
import time
import warnings

import torch

from ctrobust.attacks import AttackSettings, pga_attack
from ctrobust.reconstruction.classical import DIPReconstruction, TVReconstruction
from ctrobust.data import load_split
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.evaluation.metrics import all_metrics, mean_std
from ctrobust.models import FBPConvNet
from ctrobust.operators.radon import RadonTransform
from ctrobust.evaluation.shift import stack_images
from ctrobust.operators.noise import GaussianNoise, measure
from experiments import _common as C

NAME = "classical_vs_trained"


class FBP(torch.nn.Module):
    """FBP (Ram-Lak) as a model with ``.operator``."""

    def __init__(self, operator):
        super().__init__()
        object.__setattr__(self, "operator", operator)

    def forward(self, y):
        return self.operator.fbp(y)


def train_fbpconvnet(cfg: dict, op, x_train: torch.Tensor, progress: bool) -> tuple[FBPConvNet, float]:
    """Plain-MSE training on noisy measurements (noise drawn from a private generator)."""
    from tqdm.auto import tqdm

    f = FBPConvNet(op, channels=cfg["unet_channels"], depth=cfg["unet_depth"], seed=0)
    opt = torch.optim.Adam(f.parameters(), lr=cfg["train_lr"])
    gen = torch.Generator().manual_seed(cfg["data_seed"] + 1)
    f.train()
    t0 = time.perf_counter()
    noise = GaussianNoise(level=cfg["noise"]) if cfg["noise"] else None
    for step in tqdm(range(cfg["train_steps"]), desc="train FBPConvNet", disable=not progress):
        idx = torch.randperm(len(x_train), generator=gen)[: cfg["train_batch"]]
        xb = x_train[idx]
        yb = measure(op, xb, noise, seed=(cfg["data_seed"] + 1) * 1_000_003 + step)  # fresh noise per step
        loss = ((f(yb) - xb) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    f.eval()
    return f, time.perf_counter() - t0


def plot(summary: list[dict], examples: dict, x: torch.Tensor, path) -> None:
    plt = C.pyplot()
    methods = list(dict.fromkeys(r["method"] for r in summary))
    fig = plt.figure(figsize=(4 * 2 + 2 * len(examples), 4))
    gs = fig.add_gridspec(2, 2 + len(examples) + 1)
    for j, metric in enumerate(("relative_error", "ssim")):
        ax = fig.add_subplot(gs[:, j])
        for m in methods:
            rows = [r for r in summary if r["method"] == m]
            ax.plot([r["eps"] for r in rows], [r[f"{metric}_mean"] for r in rows], "o-", label=m)
        ax.set_xlabel("eps (relative to ||y||)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend()
    ax = fig.add_subplot(gs[0, 2])
    ax.imshow(x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title("truth", fontsize=8)
    ax.axis("off")
    for k, (label, (clean, attacked)) in enumerate(examples.items()):
        for row, (img, tag) in enumerate(((clean, "clean"), (attacked, "attacked"))):
            ax = fig.add_subplot(gs[row, 3 + k])
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{label} {tag}", fontsize=8)
            ax.axis("off")
    C.save_figure(fig, path)


def body(cfg: dict, out, args) -> dict:
    warnings.filterwarnings("ignore", message="Sparse")
    progress = args.progress
    op = RadonTransform(ParallelBeam2D(cfg["image_size"], cfg["n_angles"]))
    x_train = stack_images(load_split(None, "train", size=cfg["image_size"], n_phantoms=cfg["n_train"], seed=cfg["data_seed"]))
    x_test = stack_images(load_split(None, "test", size=cfg["image_size"], n_phantoms=cfg["n_test"], seed=cfg["data_seed"]))
    y_test = measure(op, x_test, GaussianNoise(level=cfg["noise"]) if cfg["noise"] else None, seed=cfg["data_seed"] + 2)

    f_net, train_s = train_fbpconvnet(cfg, op, x_train, progress)
    methods = {
        "fbp": (FBP(op), len(x_test), cfg["attack_steps"]),
        "tv": (TVReconstruction(op, tau=cfg["tv_tau"], iterations=cfg["tv_iterations"]), len(x_test), cfg["attack_steps"]),
        "dip": (DIPReconstruction(op, channels=cfg["dip_channels"], depth=cfg["dip_depth"], iterations=cfg["dip_iterations"],
                                  lr=cfg["dip_lr"], patience=cfg["dip_patience"], seed=0),
                min(cfg["dip_samples"], len(x_test)), cfg["dip_attack_steps"]),
        "fbpconvnet": (f_net, len(x_test), cfg["attack_steps"]),
    }
    rows, timing, examples = [], {"train_fbpconvnet_s": round(train_s, 1)}, {}
    for name, (f, n, steps) in methods.items():
        x, y = x_test[:n], y_test[:n]
        t0 = time.perf_counter()
        for eps in cfg["eps_grid"]:
            if eps == 0:
                with torch.no_grad():
                    rec = f(y)
            else:
                res = pga_attack(f, y, x, float(eps), AttackSettings(steps=steps), progress=progress,
                                 generator=torch.Generator().manual_seed(cfg["attack_seed"]))
                rec = res.reconstruction
            m = all_metrics(rec, x)
            for i in range(n):
                rows.append({"method": name, "eps": float(eps), "sample": i, "attack_steps": steps if eps else 0,
                             **{k: float(v[i]) for k, v in m.items()}})
            if eps == 0:
                clean0 = rec[0].detach()
            elif eps == max(cfg["eps_grid"]):
                examples[name] = (clean0.clamp(0, 1), rec[0].detach().clamp(0, 1))
        timing[f"{name}_s"] = round(time.perf_counter() - t0, 1)
        print(f"  {name}: {timing[f'{name}_s']} s", file=sys.stderr)

    summary = []
    for name in methods:
        for eps in cfg["eps_grid"]:
            sel = [r for r in rows if r["method"] == name and r["eps"] == float(eps)]
            s = {"method": name, "eps": float(eps), "n": len(sel)}
            for k in ("mse", "relative_error", "psnr", "ssim"):
                s.update(mean_std(k, [r[k] for r in sel]))
            summary.append(s)
    C.write_csv(out / "samples.csv", rows)
    C.write_csv(out / "summary.csv", summary)
    C.write_json(out / "summary.json", {"summary": summary, "timing": timing, "torch_threads": torch.get_num_threads()})
    plot(summary, examples, x_test, out / "figure.png")
    head = {}
    for s in summary:
        head[f"{s['method']} eps={s['eps']:g}"] = (f"rel. error {s['relative_error_mean']:.3f}, PSNR {s['psnr_mean']:.1f} dB, "
                                                   f"SSIM {s['ssim_mean']:.3f} (n={s['n']})")
    head.update(timing)
    return head


def main(argv=None) -> int:
    return C.run_main(NAME, __doc__.splitlines()[0], body, argv)


if __name__ == "__main__":
    sys.exit(main())
