"""Linear min-max theory: does a linear network trained by min-max learn the closed-form filter?

``python -m experiments.linear_theory.run [--quick] [--out DIR] [--force]`` (see README.md).

For each size n in ``sizes``: build an ill-conditioned square ``A = U diag(s) V^T`` (singular values
log-spaced ``s_min..s_max``, random orthogonal U, V from ``matrix_seed``; or ``matrix="dct-submatrix"``),
draw exactly whitened training data (empirical mean 0, covariance I), and train
``ctrobust.models.LinearReconstruction`` with the project's objectives at absolute radius ``eps``:

- ``universal``: one perturbation shared by the batch (kept between steps, ``ascent_steps`` normalised
  ascent steps per step) -- the setting of the closed form ``ctrobust.attacks.linear_theory.minmax_linear_solution``;
- ``minmax``: the project's min-max objective with the adversary ``minmax_mode`` (default ``shared``:
  one direction that does not depend on x, scaled to the radius; ``project``: the paper's per-sample
  network G, an MLP on y), ``g_steps = ascent_steps``.

Training is full-batch Adam with learning-rate drops (a finite batch makes the shared perturbation
exploit the batch mean of the residual, which biases the filter by several per cent).
Then read the learned filter ``q_i = v_i^T B u_i``, compare it with the closed form, and compute the
trade-off across eps: clean error ``||B A x - x||^2`` and exact worst-case errors (per sample: a
trust-region problem; shared perturbation: ``||BA - I||_F^2 + eps^2 ||B||_2^2``), cross-checked with
``ctrobust.attacks.pga_attack``.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ctrobust.attacks import AttackSettings, linear_theory as theory
from ctrobust.attacks import pga_attack
from ctrobust.errors import CtrobustError
from ctrobust.models import LinearReconstruction
from ctrobust.operators.cs import DCTSubmatrix, MatrixOperator
from ctrobust.training import fit
from ctrobust.training.objectives import build_objective
from experiments import _common as C
from experiments.linear_theory.exact import (clean_errors, shared_worst_case_expected, whitened_samples,
                                             per_sample_minmax_filter, worst_case_errors)

NAME = "linear_theory"


def make_matrix(cfg: dict, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(A, U, s, Vt)`` with ``A = U diag(s) Vt``, ``s`` descending, float64."""
    if cfg["matrix"] == "logspace":
        rng = np.random.default_rng(cfg["matrix_seed"] + 1000 * n)
        U, _ = np.linalg.qr(rng.standard_normal((n, n)))
        V, _ = np.linalg.qr(rng.standard_normal((n, n)))
        s = np.logspace(math.log10(cfg["s_max"]), math.log10(cfg["s_min"]), n)
        A = (U * s) @ V.T
    elif cfg["matrix"] == "dct-submatrix":
        A = DCTSubmatrix(n, n, seed=cfg["matrix_seed"]).to_dense().numpy()
    else:
        raise CtrobustError(f"matrix must be 'logspace' or 'dct-submatrix', got {cfg['matrix']!r}")
    U, s, Vt = np.linalg.svd(A)
    return A, U, s, Vt


def train_linear(kind: str, A: np.ndarray, X: np.ndarray, cfg: dict, progress: bool) -> tuple[np.ndarray, dict]:
    """Train ``LinearReconstruction`` (float64) with the ``universal``, ``minmax`` or ``pgd`` objective.

    Returns ``(B, log)``. ``universal`` trains full-batch (``batch_size``, ``steps``); the per-sample
    adversaries (``minmax``: the network G; ``pgd``: ``pgd_steps`` projected gradient steps per sample)
    use ``per_sample_batch_size`` and ``per_sample_steps``.
    """
    m, n = A.shape
    op = MatrixOperator(A)
    model = LinearReconstruction(m, n, dtype=torch.float64)
    perturbed = {"eps": cfg["eps"], "lam": cfg["lam"], "relative": False, "seed": cfg["train_seed"]}
    options = {"minmax": {"g_lr": cfg["g_lr"], "g_steps": cfg["ascent_steps"], "mode": cfg["minmax_mode"]},
               "pgd": {"steps": cfg["pgd_steps"]}, "universal": {"steps": cfg["ascent_steps"]}}.get(kind, {})
    objective = build_objective(kind, **perturbed, **options)
    if kind == "minmax":  # G's width from the config (an MLP on the (m,) measurement vector)
        objective.channels = cfg["g_channels"]
    steps = cfg["steps"] if kind == "universal" else cfg["per_sample_steps"]
    batch = cfg["batch_size"] if kind == "universal" else cfg["per_sample_batch_size"]
    result = fit(model, op, objective, TensorDataset(torch.from_numpy(X)), None, max_steps=steps,
                 batch_size=batch, lr=cfg["lr"], scheduler=cfg["scheduler"], seed=cfg["train_seed"],
                 device="cpu", log_every=max(1, steps // 20), progress=progress)
    return model.B.detach().numpy().copy(), {"history": result.history}


def filter_of(B: np.ndarray, U: np.ndarray, Vt: np.ndarray) -> tuple[np.ndarray, float]:
    """``q_i = v_i^T B u_i`` (descending-s order) and the off-diagonal energy ``||M - diag q||_F / ||M||_F``."""
    M = Vt @ B @ U
    q = np.diag(M).copy()
    return q, float(np.linalg.norm(M - np.diag(q)) / np.linalg.norm(M))


def pga_check(B: np.ndarray, A: np.ndarray, X: np.ndarray, eps: float, cfg: dict) -> np.ndarray:
    """Per-sample PGA worst case (target truth, absolute eps) of ``f(y) = B y``."""
    Bt = torch.from_numpy(B)
    x = torch.from_numpy(X)
    y = x @ torch.from_numpy(A).T
    res = pga_attack(lambda v: v @ Bt.T, y, x, eps,
                     AttackSettings(relative=False, steps=cfg["pga_steps"], restarts=cfg["pga_restarts"]),
                     generator=torch.Generator().manual_seed(0))
    return res.error.double().numpy()


def run_size(n: int, cfg: dict, progress: bool) -> dict:
    A, U, s, Vt = make_matrix(cfg, n)
    X = whitened_samples(cfg["n_train"], n, cfg["data_seed"])
    X_test = np.random.default_rng(cfg["data_seed"] + 7).standard_normal((cfg["n_test"], n))
    q_closed, k = theory.minmax_linear_solution(s, cfg["eps"], cfg["lam"])
    q_pinv = 1.0 / s
    B_closed = theory.minmax_linear_operator(A, cfg["eps"], cfg["lam"]).numpy()
    out = {"n": n, "cond": float(s[0] / s[-1]), "k_clipped": int(k), "clip_level": float(q_closed[np.argmin(s)]),
           "s": s, "q_pinv": q_pinv, "q_closed": q_closed, "learned": {}}
    adversaries = [a for a in cfg["adversaries"] if a == "universal" or n in cfg["per_sample_sizes"]]
    for a in adversaries:
        if a not in ("universal", "minmax", "pgd"):
            raise CtrobustError(f"adversaries: {a!r} is not one of universal, minmax, pgd")
    per_sample = [a for a in adversaries if a != "universal"]
    if per_sample:  # the target of the per-sample adversaries: numerical optimum with the exact inner max
        X_ps = whitened_samples(cfg["per_sample_reference_samples"], n, cfg["data_seed"] + 11)
        out["q_per_sample"] = per_sample_minmax_filter(s, cfg["eps"], cfg["lam"], X_ps, q0=q_closed)
    for kind in adversaries:
        t0 = time.perf_counter()
        B, log = train_linear(kind, A, X, cfg, progress)
        q, off = filter_of(B, U, Vt)
        rel = float(np.linalg.norm(q - q_closed) / np.linalg.norm(q_closed))
        rel_clipped = float(np.max(np.abs(q[-k:] - q_closed[-k:]) / q_closed[-k:])) if k else 0.0
        q_ps = out.get("q_per_sample")
        rel_ps = float(np.linalg.norm(q - q_ps) / np.linalg.norm(q_ps)) if q_ps is not None else None
        out["learned"][kind] = {"B": B, "q": q, "rel_diff": rel, "max_rel_diff_clipped": rel_clipped,
                                "rel_diff_per_sample_optimum": rel_ps,
                                "offdiag": off, "matrix_rel_diff": float(np.linalg.norm(B - B_closed) / np.linalg.norm(B_closed)),
                                "train_seconds": time.perf_counter() - t0, "history": log["history"]}
    # trade-off across eps: pseudo-inverse, eps-matched closed form, and the learned maps (trained at eps)
    B_pinv = np.linalg.pinv(A)
    rng_sub = X_test[: cfg["pga_samples"]]
    rows = []
    for eps in cfg["eps_grid"]:
        maps = {"pinv": B_pinv, "closed_form_matched": theory.minmax_linear_operator(A, eps, cfg["lam"]).numpy(),
                f"closed_form_eps{cfg['eps']:g}": B_closed}
        if "q_per_sample" in out:
            maps["per_sample_optimum"] = (Vt.T * out["q_per_sample"]) @ U.T
        maps.update({f"learned_{kind}": v["B"] for kind, v in out["learned"].items()})
        for method, B in maps.items():
            wc = worst_case_errors(B, A, X_test, eps)
            row = {"n": n, "eps": eps, "method": method, "clean": float(clean_errors(B, A, X_test).mean()),
                   "clean_expected": float(theory.clean_error(B, A)),
                   "worst_per_sample": float(wc.mean()),
                   "worst_shared_expected": shared_worst_case_expected(B, A, eps)}
            if eps > 0 and method in ("pinv", "closed_form_matched", f"learned_{adversaries[0]}"):
                exact_sub = worst_case_errors(B, A, rng_sub, eps)
                pga = pga_check(B, A, rng_sub, eps, cfg)
                row["pga_worst"] = float(pga.mean())
                row["pga_over_exact"] = float(pga.mean() / exact_sub.mean())
                row["pga_max_excess"] = float(np.max(pga / exact_sub - 1.0))
                # third, independent route: ctrobust.attacks.linear_theory's own per-sample solver
                with np.errstate(all="ignore"):
                    _, th = theory.worst_case_perturbation(B, A, eps, rng_sub)
                ok = np.isfinite(th)
                row["theory_solver_max_rel_diff"] = float(np.max(np.abs(th[ok] / exact_sub[ok] - 1.0))) if ok.any() else None
                row["theory_solver_nonfinite"] = int((~ok).sum())
            rows.append(row)
    out["tradeoff"] = rows
    return out


def plot(results: list[dict], cfg: dict, path) -> None:
    plt = C.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(results):
        c = colors[i % len(colors)]
        ax1.loglog(r["s"], r["q_pinv"], ":", color=c, lw=1)
        ax1.loglog(r["s"], r["q_closed"], "-", color=c, lw=1.5, label=f"n={r['n']}: closed form, shared d (k={r['k_clipped']})")
        if "q_per_sample" in r:
            ax1.loglog(r["s"], r["q_per_sample"], "--", color=c, lw=1.2, label=f"n={r['n']}: numerical optimum, per-sample d")
        for kind, marker in (("universal", "o"), ("minmax", "x"), ("pgd", "+")):
            if kind in r["learned"]:
                L = r["learned"][kind]
                ax1.loglog(r["s"], np.abs(L["q"]), marker, color=c, ms=5, mfc="none",
                           label=f"n={r['n']}: learned, {kind} ({100 * L['rel_diff']:.2f} %)")
    ax1.set_xlabel("singular value s_i of A")
    ax1.set_ylabel("filter q_i = v_i^T B u_i  (dotted: 1/s_i)")
    ax1.set_title(f"learned vs closed-form filter (eps={cfg['eps']:g} absolute, lambda={cfg['lam']:g})")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7)
    r = results[0]
    rows = [row for row in r["tradeoff"]]
    styles = {"pinv": ("black", "pseudo-inverse"), "closed_form_matched": (colors[1], "filtered inverse (eps-matched)"),
              f"closed_form_eps{cfg['eps']:g}": (colors[2], f"filtered inverse (eps={cfg['eps']:g})")}
    for method, (color, label) in styles.items():
        pts = sorted((row for row in rows if row["method"] == method), key=lambda t: t["eps"])
        eps = np.array([p["eps"] for p in pts])
        ax2.semilogy(eps, [p["clean"] for p in pts], "--", color=color, lw=1, label=f"{label}: clean")
        ax2.semilogy(eps, [p["worst_per_sample"] for p in pts], "-", color=color, lw=1.8,
                     label=f"{label}: worst case (exact)")
        pga = [(p["eps"], p["pga_worst"]) for p in pts if "pga_worst" in p]
        if pga:
            ax2.semilogy(*zip(*pga), "o", color=color, mfc="none", ms=6, label=f"{label}: PGA")
    positive = [p[key] for p in rows for key in ("clean", "worst_per_sample") if p[key] > 1e-12]
    ax2.set_ylim(bottom=0.5 * min(positive))
    ax2.text(0.02, 0.03, "pseudo-inverse: clean error 0 (below the axis)", transform=ax2.transAxes, fontsize=7)
    ax2.set_xlabel("eps (absolute l2 radius of the measurement perturbation)")
    ax2.set_ylabel("E ||B(Ax + d) - x||^2 (test mean)")
    ax2.set_title(f"trade-off, n={r['n']}, cond(A)={r['cond']:.3g}")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7)
    C.save_figure(fig, path)


def body(cfg: dict, out, args) -> dict:
    torch_threads = torch.get_num_threads()
    results = [run_size(int(n), cfg, args.progress) for n in cfg["sizes"]]
    filter_rows, summary_rows = [], []
    for r in results:
        for i in range(r["n"]):
            row = {"n": r["n"], "index": i, "s": r["s"][i], "q_pinv": r["q_pinv"][i], "q_closed": r["q_closed"][i]}
            if "q_per_sample" in r:
                row["q_per_sample_optimum"] = r["q_per_sample"][i]
            for kind, L in r["learned"].items():
                row[f"q_{kind}"] = L["q"][i]
            filter_rows.append(row)
        for kind, L in r["learned"].items():
            summary_rows.append({"n": r["n"], "adversary": kind, "cond": r["cond"], "k_clipped": r["k_clipped"],
                                 "clip_level": r["clip_level"], "rel_diff": L["rel_diff"],
                                 "rel_diff_per_sample_optimum": L["rel_diff_per_sample_optimum"],
                                 "max_rel_diff_clipped": L["max_rel_diff_clipped"], "offdiag": L["offdiag"],
                                 "matrix_rel_diff": L["matrix_rel_diff"], "train_seconds": L["train_seconds"]})
    tradeoff = [row for r in results for row in r["tradeoff"]]
    C.write_csv(out / "filter.csv", filter_rows)
    C.write_csv(out / "summary.csv", summary_rows)
    C.write_csv(out / "tradeoff.csv", tradeoff)
    C.write_json(out / "results.json", {
        "summary": summary_rows, "tradeoff": tradeoff, "filter": filter_rows,
        "history": {f"n{r['n']}_{k}": L["history"] for r in results for k, L in r["learned"].items()},
        "torch_threads": torch_threads,
    })
    plot(results, cfg, out / "figure.png")
    head = {}
    for row in summary_rows:
        head[f"n={row['n']} {row['adversary']}"] = (f"filter rel. diff {100 * row['rel_diff']:.2f} %, "
                                                    f"off-diagonal {100 * row['offdiag']:.2f} %, k={row['k_clipped']}")
    return head


def main(argv=None) -> int:
    return C.run_main(NAME, __doc__.splitlines()[0], body, argv)


if __name__ == "__main__":
    sys.exit(main())
