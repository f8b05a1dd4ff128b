"""The compressed-sensing experiments (cs_gaussian, cs_partial_dct, cs_dct_submatrix) share this runner.

One experiment = one measurement operator on vectorised images, the residual CNN
``ctrobust.models.CSResidualNet`` trained with each objective (plain, weight-decay, parseval, minmax by
default) through ``ctrobust.training.fit``, and the robustness curve under the default attack (APGD)
(``ctrobust.evaluation.robustness.robustness_curve``) of every trained network and of the pseudo-inverse ``A^+ y``
over an eps grid (relative to ``||y||_2``). Outputs in ``--out``:

- ``figure.png``: relative error and PSNR vs eps, one line per objective (solid: the attack, dashed:
  Gaussian noise of the same norm), the pseudo-inverse in black; ``singular_values.png``: the spectrum of A;
  ``gallery.png``: a few test images and their reconstructions under the largest-eps attack;
- ``table.csv`` / ``table.json``: mean and std of relative error, MSE, PSNR, SSIM and ``||f - x||^2``
  per (method, eps, condition); ``results.json``: that plus operator facts, training logs and timings;
- ``models/<objective>.pt``: the trained weights (``state_dict``) with the model and operator configs.

Config keys (``experiments/<name>/config.json``): ``dataset`` ("digits", "faces", "mnist", "celeba"),
``data_path`` (for mnist/celeba), ``image_size`` (null = native), ``n_train``/``n_val``/``n_test``
(null = all of the split), ``data_seed``; ``operator`` ("gaussian", "partial-dct", "dct-submatrix"),
``m``, ``operator_seed`` (and ``dct_band`` for the sub-matrix); ``channels``, ``depth``, ``init``;
``objectives``, ``steps``, ``batch_size``, ``lr``, ``scheduler``, ``train_seed``; ``eps_train``, ``lam``,
``mu``, ``beta``, ``g_lr``, ``g_steps``, ``pgd_steps``; ``eps_grid``, ``attack_steps``,
``attack_restarts``, ``attack_samples``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ctrobust.attacks import AttackSettings
from ctrobust.data.images import load_image_set
from ctrobust.errors import CtrobustError
from ctrobust.models import CSResidualNet
from ctrobust.operators.cs import DCTSubmatrix, GaussianCS, PartialDCT
from ctrobust.evaluation.report import plot_robustness_curves
from ctrobust.evaluation.robustness import robustness_curve
from ctrobust.training import build_objective, fit
from ctrobust.training.checkpoint import save_model
from experiments import _common as C

__all__ = ["run_cs", "build_operator", "load_images"]

SUMMARY_METRICS = ("relative_error", "mse", "psnr", "ssim", "sq_error")


def load_images(cfg: dict) -> dict[str, torch.Tensor]:
    """``{"train", "val", "test"}`` -> float32 images ``(k, 1, H, W)`` in [0, 1] from ``load_image_set``."""
    out = {}
    for split in ("train", "val", "test"):
        imgs = load_image_set(cfg["dataset"], n=cfg[f"n_{split}"], size=cfg["image_size"], path=cfg["data_path"],
                              split=split, seed=cfg["data_seed"])
        out[split] = torch.from_numpy(imgs).unsqueeze(1)
    return out


def build_operator(cfg: dict, image_shape: tuple[int, int]):
    """The CS operator of the config for images of ``image_shape`` (``n = H * W``)."""
    n = image_shape[0] * image_shape[1]
    kind, m, seed = cfg["operator"], int(cfg["m"]), int(cfg["operator_seed"])
    if m > n:
        raise CtrobustError(f"m={m} measurements exceed n={n} unknowns; lower m")
    if kind == "gaussian":
        return GaussianCS(m, image_shape, seed=seed)
    if kind == "partial-dct":
        return PartialDCT(m, image_shape, seed=seed)
    if kind == "dct-submatrix":
        return DCTSubmatrix(m, n, seed=seed, image_shape=image_shape, band=cfg.get("dct_band"))
    raise CtrobustError(f"operator must be gaussian, partial-dct or dct-submatrix, got {kind!r}")


def _objective(name: str, cfg: dict):
    """The objective ``name`` with the options of the config that apply to it (as the flat options did before:
    ``g_steps`` is minmax's and universal's number of ascent steps)."""
    perturbed = {"eps": cfg["eps_train"], "lam": cfg["lam"], "relative": True}
    options = {"weight-decay": {"mu": cfg["mu"]}, "parseval": {"beta": cfg["beta"]},
               "minmax": {**perturbed, "g_lr": cfg["g_lr"], "g_steps": cfg["g_steps"]},
               "pgd": {**perturbed, "steps": cfg["pgd_steps"]},
               "universal": {**perturbed, "steps": cfg["g_steps"]}, "jitter": perturbed}.get(name, {})
    return build_objective(name, **options, seed=cfg["train_seed"])


def _summary_rows(label: str, summary: list[dict]) -> list[dict]:
    rows = []
    for s in summary:
        row = {"method": label, "eps": s["eps"], "condition": s["condition"], "n": s.get("n")}
        for k in SUMMARY_METRICS:
            for stat in ("mean", "std"):
                if f"{k}_{stat}" in s:
                    row[f"{k}_{stat}"] = s[f"{k}_{stat}"]
        rows.append(row)
    return rows


def _plot_spectrum(op, path, title):
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    s = op.singular_values().numpy()
    ax.semilogy(np.arange(1, len(s) + 1), s, ".-")
    ax.set_xlabel("index")
    ax.set_ylabel("singular value of A")
    ax.set_title(f"{title}: cond = {op.cond():.3g}")
    ax.grid(alpha=0.3, which="both")
    C.save_figure(fig, path)


def _plot_gallery(examples: dict[str, dict], x: torch.Tensor, eps: float, path, k: int = 4):
    """Rows: truth, then each method's reconstruction under the attack at ``eps``."""
    plt = C.pyplot()
    labels = list(examples)
    k = min(k, x.shape[0])
    fig, axes = plt.subplots(1 + len(labels), k, figsize=(1.6 * k, 1.6 * (1 + len(labels))), squeeze=False)
    for j in range(k):
        axes[0][j].imshow(x[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        for i, label in enumerate(labels):
            img = examples[label][j, 0].numpy()
            axes[i + 1][j].imshow(img, cmap="gray", vmin=0, vmax=1)
    for i, label in enumerate(["truth"] + [f"{lab}\n(attack eps={eps:g})" for lab in labels]):
        axes[i][0].set_ylabel(label, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    C.save_figure(fig, path)


def run_cs(cfg: dict, out, args, *, title: str) -> dict:
    """Run one CS experiment from its resolved config; write figures and tables into ``out``."""
    t_start = time.perf_counter()
    data = load_images(cfg)
    image_shape = tuple(data["train"].shape[-2:])
    op = build_operator(cfg, image_shape)
    n = image_shape[0] * image_shape[1]
    s = op.singular_values()
    facts = {"operator": op.to_config(), "m": op.m, "n": n, "image_shape": list(image_shape), "cond": op.cond(),
             "sigma_max": float(s[0]), "sigma_min": float(s[-1]),
             "n_train": len(data["train"]), "n_val": len(data["val"]), "n_test": len(data["test"])}
    train_set, val_set = TensorDataset(data["train"]), TensorDataset(data["val"])
    test_set = data["test"]  # (k, 1, H, W): robustness_curve takes a tensor-indexable dataset
    settings = AttackSettings(steps=cfg["attack_steps"], restarts=cfg["attack_restarts"], relative=True,
                              seed=cfg["attack_seed"])
    attack_kw = dict(batch_size=cfg["attack_batch_size"], progress=args.progress, max_samples=cfg["attack_samples"],
                     n_examples=4, linearization=False)
    summaries, table, logs, examples = {}, [], {}, {}
    models_dir = out / "models"
    for name in cfg["objectives"]:
        t0 = time.perf_counter()
        model = CSResidualNet(op, channels=cfg["channels"], depth=cfg["depth"], init=cfg["init"], seed=cfg["train_seed"])
        objective = _objective(name, cfg)
        res = fit(model, op, objective, train_set, val_set, max_steps=cfg["steps"],
                  batch_size=cfg["batch_size"], lr=cfg["lr"], scheduler=cfg["scheduler"], seed=cfg["train_seed"],
                  device="cpu", val_every=max(1, cfg["steps"] // 4), log_every=max(1, cfg["steps"] // 50),
                  progress=args.progress)
        train_s = time.perf_counter() - t0
        model.eval()
        t0 = time.perf_counter()
        curve = robustness_curve(model, test_set, op, cfg["eps_grid"], settings, **attack_kw)
        logs[name] = {"train_seconds": train_s, "attack_seconds": time.perf_counter() - t0,
                      "validation": res.validation, "final_metrics": res.metrics,
                      "history": res.history}
        summaries[name] = curve.summary
        table += _summary_rows(name, curve.summary)
        examples[name] = curve.examples.get(max(cfg["eps_grid"]), {}).get("attack")
        # the trainer's checkpoint format: ctrobust.training.load_checkpoint(models/<name>.pt) rebuilds the model
        save_model(models_dir / f"{name}.pt", model, op, objective={"config": objective.to_config()})
    # the pseudo-inverse, the linear reference every network starts from (init="pinv")
    curve = robustness_curve(op.pinv, test_set, op, cfg["eps_grid"], settings, **attack_kw)
    summaries["pinv"] = curve.summary
    table += _summary_rows("pinv", curve.summary)
    examples["pinv"] = curve.examples.get(max(cfg["eps_grid"]), {}).get("attack")
    truth = curve.examples.get("x")

    C.write_csv(out / "table.csv", table)
    C.write_json(out / "table.json", table)
    C.write_json(out / "results.json", {"title": title, "operator": facts, "table": table, "training": logs,
                                        "wall_seconds": time.perf_counter() - t_start})
    plot_robustness_curves(summaries, out / "figure.png", metrics=("relative_error", "psnr"), reference=("pinv",),
                           relative=True, title=f"{title} (m={op.m}, n={n}, cond={op.cond():.3g}; {cfg['dataset']})")
    _plot_spectrum(op, out / "singular_values.png", title)
    if truth is not None and all(v is not None for v in examples.values()):
        _plot_gallery(examples, truth, max(cfg["eps_grid"]), out / "gallery.png")

    eps_max = max(cfg["eps_grid"])
    head = {"operator": f"{cfg['operator']} m={op.m} n={n} cond={op.cond():.3g}"}
    for label in summaries:
        att = next(r for r in table if r["method"] == label and r["eps"] == eps_max and r["condition"] == "attack")
        cln = next(r for r in table if r["method"] == label and r["eps"] == eps_max and r["condition"] == "clean")
        head[label] = (f"relative error clean {cln['relative_error_mean']:.4f}, "
                       f"attack eps={eps_max:g}: {att['relative_error_mean']:.4f}")
    return head


def cs_main(name: str, title: str, doc: str, argv=None) -> int:
    """The command line of one CS experiment (``experiments/<name>/run.py``): config ``<name>/config.json``."""
    return C.run_main(name, doc.splitlines()[0], lambda cfg, out, args: run_cs(cfg, out, args, title=title), argv)
