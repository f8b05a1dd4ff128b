"""``run_attack``: worst-case robustness curves of checkpoints and methods, FBP as reference (``ctrobust attack``).

A layer over :func:`ctrobust.evaluation.robustness.robustness_curve` (and :func:`~ctrobust.evaluation.robustness.verify_attack`):
writes ``samples.csv`` (per sample), ``summary.csv`` and ``summary.json`` (mean / std per model, eps and
condition), ``robustness_curve.png``, ``gallery.png`` and with ``verify`` ``verify.csv`` into ``spec.out``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ctrobust.app.inputs import (acquisition_config, check_attackable, image_shape, load_inputs, method_options_record,
                                 models_record, noise_model, progress_enabled)
from ctrobust.app.results import ResultFolder
from ctrobust.app.specs import AttackSpec
from ctrobust.attacks import CONVERGENCE_TOLERANCE
from ctrobust.errors import CtrobustError
from ctrobust.files import resolve_device

__all__ = ["run_attack", "AttackRunResult"]

VERIFY_COLUMNS = ["model", "eps", "ratio_mean", "ratio_min", "relative_error_default", "relative_error_strong"]


@dataclasses.dataclass
class AttackRunResult:
    """What :func:`run_attack` wrote and found: ``summary`` rows (per model, eps, condition), the
    ``verification`` rows (with ``verify``), the ``config`` record and the files under ``out``."""

    out: Path
    config: dict
    models: list
    summary: list
    verification: list
    written: list

    def text(self) -> str:
        """The tables ``ctrobust attack`` prints."""
        from ctrobust.evaluation import report as rp

        rows, cols = rp.attack_table(self.summary)
        text = rp.format_table(rows, cols)
        if self.verification:
            cfg = self.config
            text += (f"\n\nverification on {self.verification[0]['n']} samples: squared error of the default attack / "
                     f"of {cfg['verify_steps']} steps x {cfg['verify_restarts']} restarts (1.0 = converged)\n")
            text += rp.format_table([{k: r[k] for k in VERIFY_COLUMNS} for r in self.verification], VERIFY_COLUMNS)
        return text


def run_attack(spec: AttackSpec) -> AttackRunResult:
    """Attack every model of ``spec`` over its eps grid; write the result folder ``spec.out``."""
    import torch

    from ctrobust.evaluation import report as rp
    from ctrobust.evaluation.robustness import robustness_curve, verify_attack

    grid, gallery_eps = spec.eps_settings()
    settings = spec.attack_settings()
    folder = ResultFolder(spec.out, spec.force).check()
    device = resolve_device(spec.device)
    recs, dataset = load_inputs(spec, device)
    check_attackable(recs, dataset, device)
    folder.create()
    progress = progress_enabled(spec)
    sample_rows, summary_rows, summaries, gallery = [], [], {}, []
    verify_rows = []
    lin_runs = {}  # model -> Lanczos iterations / seconds per batch of the linearisation
    for rec in recs:
        print(f"attacking {rec.label} ({rec.source}) on {min(len(dataset), spec.n_samples or len(dataset))} samples, "
              f"eps grid {grid}, {spec.attack.upper()} {spec.steps} steps x {spec.restarts}", file=sys.stderr)
        noise = noise_model(spec, rec.operator)
        linearization = spec.linearization and not (rec.kind == "method" and rec.info.get("method") in ("tv", "dip"))
        try:
            result = robustness_curve(rec.f, dataset, rec.operator, grid, settings, batch_size=spec.batch_size,
                                      progress=progress, max_samples=spec.n_samples, n_examples=1, device=device,
                                      linearization=linearization, noise=noise)
        except (ValueError, FloatingPointError) as exc:
            raise CtrobustError(f"attacking {rec.label}: {exc}") from None
        _report_linearization(rec.label, result, lin_runs)
        _report_convergence(rec.label, result, spec)
        _report_spread(rec.label, result)
        if spec.verify:
            rows = verify_attack(rec.f, dataset, rec.operator, result, spec.verify,
                                 spec.verify_settings(result.config), progress=progress, device=device, noise=noise)
            verify_rows += [{"model": rec.label, **r} for r in rows]
        sample_rows += [{"model": rec.label, **r} for r in result.rows]
        summary_rows += [{"model": rec.label, **r} for r in result.summary]
        summaries[rec.label] = result.summary
        ex = result.examples
        y = ex["y"][:1]
        fbp = None
        if hasattr(rec.operator, "fbp"):
            with torch.no_grad():
                fbp = rec.operator.fbp(y.to(device)).cpu()[0, 0].numpy()
        at = ex[gallery_eps]
        delta = at["delta"][0]
        gallery.append({"label": rec.label, "truth": ex["x"][0, 0].numpy(), "fbp": fbp,
                        "clean": ex["clean"][0, 0].numpy(), "attack": at["attack"][0, 0].numpy(),
                        "delta": (delta[0] if delta.dim() == 3 else delta).numpy()})
    config = {"eps_grid": grid, "gallery_eps": gallery_eps, **settings.to_config(), "linearization": spec.linearization,
              "data": spec.data or "built-in phantoms", "split": spec.split, "n_samples": result.config["n_samples"],
              "method_options": method_options_record(recs), "photons": spec.photons}
    if verify_rows:
        config.update(verify_steps=spec.verify_steps, verify_restarts=spec.verify_restarts)
    if lin_runs:
        config["linearization_runs"] = lin_runs
    if spec.protocol is not None:  # --protocol: which one, at which size, by its fingerprint
        from ctrobust.app.acquisition import protocol_of

        used = protocol_of(spec, spec.size or image_shape(recs[0].operator)[-1])
        config["protocol"] = {"name": used.name, "fingerprint": used.fingerprint(), "size": used.scan.image_size}
    config.update(acquisition_config(spec, recs))  # what was measured: geometry, backend, noise
    models = models_record(recs, spec)
    folder.write_csv("samples.csv", sample_rows)
    folder.write_csv("summary.csv", summary_rows)
    tables = {"verification": verify_rows} if verify_rows else {}
    if verify_rows:
        folder.write_csv("verify.csv", verify_rows)
    folder.write_summary("attack", config, models, summary_rows, **tables)
    rp.plot_robustness_curves(summaries, folder.figure("robustness_curve.png"), relative=not spec.absolute,
                              title=f"{spec.attack.upper()} ({spec.steps} steps, {spec.restarts} restart(s)) vs random "
                              f"noise, target: {spec.target}"
                              + (f"; I0 = {spec.photons:g} photons (dotted: the dose noise itself)" if spec.photons else ""))
    rp.plot_gallery(gallery, folder.figure("gallery.png"),
                    title=f"sample 0, eps = {gallery_eps:g}{'' if spec.absolute else ' (relative)'}")
    return AttackRunResult(out=folder.path, config=config, models=models, summary=summary_rows,
                        verification=verify_rows, written=list(folder.written))


def _report_linearization(label: str, result, lin_runs: dict) -> None:
    """Say what the linearisation (Jacobian norms, exact worst cases) cost, and keep it for summary.json."""
    runs = result.config.get("linearization_runs")
    if not runs:
        return
    lin_runs[label] = runs
    its = sum(r["iterations"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    open_ = sum(not r["converged"] for r in runs)
    print(f"{label}: linearisation {its} Lanczos iterations in {secs:.1f} s over {len(runs)} batch(es)"
          + (f", {open_} stopped at the budget before converging" if open_ else ", converged")
          + " (--no-linearization skips it)", file=sys.stderr)


def _report_convergence(label: str, result, spec: AttackSpec) -> None:
    """Say how many samples had not converged (best loss still rising > 0.5 % over the last fifth)."""
    bad = {}
    for r in result.rows:
        if r["condition"] == "attack" and r.get("converged") == 0.0:
            bad[r["eps"]] = bad.get(r["eps"], 0) + 1
    if bad:
        n = result.config["n_samples"]
        where = ", ".join(f"{c}/{n} at eps {e:g}" for e, c in sorted(bad.items()))
        tried = f" and after {spec.extend} continuation(s)" if spec.extend else ""
        print(f"{label}: the attack had not converged on {where} (its best loss still rose by more than 0.5 % over "
              f"the last fifth of the steps{tried}); the worst case may be larger: try --steps {2 * max(spec.steps, 1)}"
              f", --extend {max(2 * spec.extend, 2)} or --verify 4", file=sys.stderr)


def _report_spread(label: str, result) -> None:
    """With restarts >= 2: how far the second-best independent run fell short of the best, per eps."""
    spreads: dict[float, list[float]] = {}
    for r in result.rows:
        if r["condition"] == "attack" and "restart_spread" in r:
            spreads.setdefault(r["eps"], []).append(r["restart_spread"])
    if not spreads:
        return
    worst_eps, worst = max(((e, max(v)) for e, v in spreads.items()), key=lambda t: t[1])
    if worst <= CONVERGENCE_TOLERANCE:
        print(f"{label}: independent restarts agree on every sample and eps (spread <= "
              f"{100 * CONVERGENCE_TOLERANCE:g} %)", file=sys.stderr)
        return
    cells = ", ".join(f"eps {e:g}: {100 * sum(v) / len(v):.1f} %" for e, v in sorted(spreads.items()))
    print(f"{label}: independent restarts: the second-best run fell short of the best by {cells} on average "
          f"(largest {100 * worst:.1f} % at eps {worst_eps:g}): the runs ended in different local maxima, so the "
          "reported worst case is a lower bound and more --restarts (or --steps) likely find more where this is "
          "large", file=sys.stderr)
