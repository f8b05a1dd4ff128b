"""``run_demo``: the main job end to end on built-in phantoms (``ctrobust demo``).

1. the operator: project Shepp-Logan, reconstruct it by FBP, check the adjoint (``operator.png``,
   ``operator.json``);
2. train a small FBPConvNet twice on built-in phantoms: plainly and with the min-max objective
   (``plain/``, ``minmax/``; :func:`~ctrobust.app.run_train`);
3. attack both and FBP with the default attack (APGD) over an eps grid (``attack/``;
   :func:`~ctrobust.app.run_attack`); with ``photons`` the networks train on low-dose data and the attack
   perturbs the noisy measurement (the figure's dotted line: the error of the noise itself);
3b. the same attack on one real CT slice (``--data real``: pydicom's CT_small.dcm) for its gallery
   (``attack_real/``);
4. one report with the tables and figures (``report.md``; :func:`~ctrobust.app.run_report`);
5. the wall and CPU time of each stage (``timings.json``, and a line on stderr).

Each stage runs the spec of the corresponding command, so the folders it writes are exactly what those
commands write.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from ctrobust.app.attack import AttackRunResult, run_attack
from ctrobust.app.acquisition import build_geometry, geometry_fields
from ctrobust.app.report import run_report
from ctrobust.app.results import ResultFolder
from ctrobust.app.specs import AttackSpec, DemoSpec, ReportSpec, TrainSpec
from ctrobust.app.train import run_train

__all__ = ["run_demo", "DemoResult", "check_operator", "demo_stages", "real_slice_stage", "StageClock"]


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` wrote: the operator check's numbers, the attack result and the report path."""

    out: Path
    operator: dict
    attack: AttackRunResult
    report: Path


class StageClock:
    """Wall and CPU time per named stage (``with clock("train"): ...``), for ``timings.json`` and the summary line."""

    def __init__(self):
        self.stages: dict[str, dict] = {}

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                self.stages[name] = {"wall_s": round(time.perf_counter() - wall, 2),
                                     "cpu_s": round(time.process_time() - cpu, 2)}

        return timed()

    def record(self) -> dict:
        total = {k: round(sum(v[k] for v in self.stages.values()), 2) for k in ("wall_s", "cpu_s")}
        return {"stages": self.stages, "total": total}

    def text(self) -> str:
        rec = self.record()
        return ", ".join(f"{k} {v['wall_s']:.0f} / {v['cpu_s']:.0f}" for k, v in [*rec["stages"].items(),
                                                                              ("total", rec["total"])])


def check_operator(size: int, angles: int, out: Path, geometry=None) -> dict:
    """Project and FBP-reconstruct Shepp-Logan; write ``operator.png`` / ``operator.json``; return the numbers.

    ``geometry`` (a ``ParallelBeam2D`` / ``FanBeam2D``) replaces the default ``ParallelBeam2D(size, angles)``."""
    import torch

    from ctrobust.data.phantoms import shepp_logan
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.evaluation.metrics import psnr, relative_error, ssim
    from ctrobust.operators.radon import RadonTransform
    from ctrobust.files import atomic_write
    from ctrobust.evaluation.report import write_json

    start = time.perf_counter()
    operator = RadonTransform(geometry if geometry is not None else ParallelBeam2D(size, angles))
    build_s = time.perf_counter() - start
    x = torch.from_numpy(shepp_logan(size))[None, None].float()
    with torch.no_grad():
        y = operator(x)
        fbp = operator.fbp(y)
    numbers = {
        "geometry": operator.geometry.to_config(),
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
    atomic_write(out / "operator.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    write_json(numbers, out / "operator.json")
    return numbers


def demo_stages(spec: DemoSpec) -> tuple[TrainSpec, TrainSpec, AttackSpec, ReportSpec]:
    """The specs of the demo's stages: plain training, min-max training, the attack and the report."""
    s = spec.settings()
    out = Path(s.out)
    common = dict(angles=s.angles, size=s.size, max_steps=s.max_steps, channels=s.channels, depth=s.depth,
                  seed=s.seed, device=s.device, force=s.force, progress=s.progress, photons=s.photons,
                  allow_large_eps=s.allow_large_eps, **geometry_fields(s))
    plain = TrainSpec(objective="plain", out=str(out / "plain"), **common)
    minmax = TrainSpec(objective="minmax", eps=s.eps, out=str(out / "minmax"), **common)
    attack = AttackSpec(checkpoint=(str(out / "plain" / "best.pt"), str(out / "minmax" / "best.pt")),
                        eps_grid=tuple(s.eps_grid), eps=s.eps, steps=s.attack_steps, n_samples=s.n_samples,
                        seed=s.seed, device=s.device, out=str(out / "attack"), force=s.force, progress=s.progress,
                        photons=s.photons, allow_large_eps=s.allow_large_eps)
    report = ReportSpec(results=(str(out / "attack"), str(out / "attack_real")), out=str(out / "report.md"),
                        force=s.force)
    return plain, minmax, attack, report


def real_slice_stage(spec: DemoSpec) -> AttackSpec:
    """The gallery of one real CT slice (``--data real``, sample 0: pydicom's thorax crop CT_small.dcm): the
    same checkpoints and attack at ``eps`` on a slice none of them was trained on, into ``attack_real/``."""
    s = spec.settings()
    out = Path(s.out)
    return AttackSpec(checkpoint=(str(out / "plain" / "best.pt"), str(out / "minmax" / "best.pt")), data="real",
                      n_samples=1, eps_grid=(0.0, s.eps), eps=s.eps, steps=s.attack_steps, seed=s.seed,
                      device=s.device, out=str(out / "attack_real"), force=s.force, progress=s.progress,
                      photons=s.photons, linearization=False, allow_large_eps=s.allow_large_eps)


def run_demo(spec: DemoSpec) -> DemoResult:
    """Run the four stages into ``spec.out`` (refused when not empty, unless ``force``)."""
    s = spec.settings()
    plain, minmax, attack, report = demo_stages(spec)  # built (and validated) before anything is written
    real = real_slice_stage(spec)
    geometry = build_geometry(s, s.size, s.angles)
    out = ResultFolder(s.out, s.force).create().path

    clock = StageClock()
    print(f"== operator: Shepp-Logan at {s.size} px, {s.angles} views, {s.geometry} beam", file=sys.stderr)
    with clock("operator"):
        numbers = check_operator(s.size, s.angles, out, geometry)
    print(f"   FBP relative error {numbers['fbp_relative_error']:.4f}, PSNR {numbers['fbp_psnr_db']:.2f} dB, "
          f"adjoint dot test {numbers['adjoint_dot_test_float64']:.1e}", file=sys.stderr)
    print("\n== train plain FBPConvNet", file=sys.stderr)
    with clock("train plain"):
        run_train(plain)
    print("\n== train min-max FBPConvNet", file=sys.stderr)
    with clock("train min-max"):
        run_train(minmax)
    print(f"\n== attack (APGD, {s.attack_steps} steps)", file=sys.stderr)
    with clock("attack"):
        attacked = run_attack(attack)
    print("\n== one real CT slice (pydicom's CT_small.dcm, never trained on)", file=sys.stderr)
    with clock("real slice"):
        run_attack(real)
    print("\n== report", file=sys.stderr)
    with clock("report"):
        path = run_report(report)
    from ctrobust.evaluation.report import write_json

    write_json(clock.record(), out / "timings.json")
    print("\ntime per stage (wall / CPU seconds of this process): " + clock.text(), file=sys.stderr)
    print(f"\ndemo done: {out}/ holds operator.png, plain/, minmax/, attack/ (robustness_curve.png, gallery.png, "
          f"summary.csv), attack_real/ (one real slice) and report.md ({len(attacked.summary)} summary rows)", file=sys.stderr)
    return DemoResult(out=out, operator=numbers, attack=attacked, report=path)
