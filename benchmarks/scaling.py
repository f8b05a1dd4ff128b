"""How ctrobust's costs grow with the image size N, in one run: time and peak memory per phase, and the
log-log slope of each against N.

At N = 64, 128, 256, 512 (143 parallel-beam views on [0, pi), ``ceil(sqrt(2) N)`` bins), per N:

* ``build``: ASTRA's system matrix built from scratch (in blocks of views, then ``A^T``; a temporary
  cache folder, so nothing is read from or written to the user's cache), its non-zeros and the MiB
  of the float32 CSR pair ``A`` + ``A^T`` kept in memory;
* ``fwd+bwd``: the Radon transform's forward and backward through autograd, batch 8 (median of
  ``--repeats``);
* ``train FBPConvNet``: one optimiser step of FBPConvNet (U-Net channels/depth 16/4), plain objective,
  batch 8 (after a warm-up step);
* ``train LPD``: the same for the unrolled Learned Primal-Dual network (``ctrobust.models.unrolled``,
  paper sizes: 10 iterations, 32 channels) when that module exists, otherwise reported as absent;
* ``train LPD ckpt``: the same with gradient checkpointing of its iterations (``checkpointing=True``: each
  iteration's activations recomputed in the backward pass, memory for time);
* ``attack step``: one step of the attack on FBPConvNet (eval mode): forward and backward of
  ``||f(y + d) - x||^2`` with respect to the measurements, batch 8;
* ``Lanczos it``: one iteration of the linearisation ``ctrobust attack`` runs by default
  (``linearized_worst_case`` on FBPConvNet: ``J v`` by double backward and ``J^T w``), batch 8,
  from 3 iterations including the set-up;
* the peak resident memory of each phase.

Each (N, phase) runs in a fresh Python process (so each peak is that phase's, import baseline
included: ~0.3-0.4 GiB) with its address space limited to ``--memory-limit`` GiB (default 16, the
budget of issue 22): a phase that needs more fails with "over limit" instead of swapping a shared
machine. ``--in-process`` runs everything in this process (peaks then come from resetting the kernel's
high-water mark, /proc/self/clear_refs, between phases).

Prints one Markdown table (a row per N, then the fitted exponent ``p`` of ``cost ~ N^p`` per column,
least squares on log-log over the sizes measured). Usage::

    python benchmarks/scaling.py                    # N = 64 128 256 512 (tens of minutes on 2 busy cores)
    python benchmarks/scaling.py --quick            # N = 32 64, small networks: a smoke run (seconds)
    python benchmarks/scaling.py --output docs/scaling-table.md --json rows.json
    python benchmarks/scaling.py --phases train_lpd train_lpd_checkpointed --sizes 128 256 512   # some phases
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

PHASES = ("build", "operator", "train_fbpconvnet", "train_lpd", "train_lpd_checkpointed", "attack", "lanczos")
#: (column header, row key, format, fitted)
COLUMNS = (
    ("N", "size", "{:d}", False),
    ("nnz (M)", "nnz_millions", "{:.2f}", True),
    ("A + A^T MiB", "matrix_mib", "{:.0f}", True),
    ("build s", "build_s", "{:.2f}", True),
    ("build peak MiB", "build_peak_mib", "{:.0f}", True),
    ("fwd+bwd ms", "operator_ms", "{:.1f}", True),
    ("train FBPConvNet s/step", "train_fbpconvnet_s", "{:.2f}", True),
    ("train peak MiB", "train_fbpconvnet_peak_mib", "{:.0f}", True),
    ("train LPD s/step", "train_lpd_s", "{:.2f}", True),
    ("LPD peak MiB", "train_lpd_peak_mib", "{:.0f}", True),
    ("train LPD ckpt s/step", "train_lpd_checkpointed_s", "{:.2f}", True),
    ("LPD ckpt peak MiB", "train_lpd_checkpointed_peak_mib", "{:.0f}", True),
    ("attack step s", "attack_s", "{:.2f}", True),
    ("attack peak MiB", "attack_peak_mib", "{:.0f}", True),
    ("Lanczos it s", "lanczos_s", "{:.2f}", True),
    ("Lanczos peak MiB", "lanczos_peak_mib", "{:.0f}", True),
)


# --- peak memory --------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the kernel's resident high-water mark of this process (Linux); False where it cannot."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """Peak resident memory of this process in MiB since start or the last :func:`reset_peak`."""
    hwm = _status_kib("VmHWM")
    if hwm is None:  # no /proc: the lifetime peak (KiB on Linux, bytes on macOS)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024
    return hwm / 1024


def timeit(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- one phase at one size ----------------------------------------------------------------------------
def _setup(size: int, views: int, batch: int):
    import torch

    from ctrobust.data import load_split
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.operators.radon import RadonTransform

    op = RadonTransform(ParallelBeam2D(size, views))
    data = load_split(None, "train", size=size, n_phantoms=batch, seed=0)
    x = torch.stack([data[i] for i in range(batch)])
    with torch.no_grad():
        y = op(x)
    return op, x, y


def _train_step_seconds(model, op, x, y, repeats: int) -> float:
    import torch

    from ctrobust.training.objectives import make_objective

    model.train()
    obj = make_objective("plain", seed=0)
    obj.setup(model, op)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        loss, _ = obj.loss(model, x, y, model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.after_step(model)

    return timeit(step, repeats)


def lpd_class():
    """``ctrobust.models.unrolled.LearnedPrimalDual`` when that module exists, else None."""
    try:
        from importlib import import_module

        return getattr(import_module("ctrobust.models.unrolled"), "LearnedPrimalDual", None)
    except ImportError:
        return None


def run_phase(phase: str, size: int, args) -> dict:
    """Measure one phase at one size in this process: ``{key: value}`` for :data:`COLUMNS` (without peaks)."""
    import torch

    torch.manual_seed(0)
    if phase == "build":
        from ctrobust.operators import astra_backend as ab
        from ctrobust.operators.geometry import ParallelBeam2D

        geometry = ParallelBeam2D(size, args.views)
        ab.clear_memory_cache(geometry)
        t0 = time.perf_counter()
        a, _ = ab.torch_matrices(geometry)  # build (blocks of views), disk-cache write, A^T
        seconds = time.perf_counter() - t0
        nbytes = ab.AstraSparseBackend(geometry).matrix_nbytes()
        return {"build_s": seconds, "nnz_millions": a.values().numel() / 1e6, "matrix_mib": nbytes / 2**20}
    op, x, y = _setup(size, args.views, args.batch)
    if phase == "operator":
        xg = x.clone().requires_grad_()
        return {"operator_ms": 1e3 * timeit(lambda: op(xg).backward(y), args.repeats)}
    if phase in ("train_lpd", "train_lpd_checkpointed"):
        cls = lpd_class()
        if cls is None:
            return {}
        kwargs = {"iterations": args.lpd_iterations, "channels": args.lpd_channels} if args.quick else {}
        if phase == "train_lpd_checkpointed":
            kwargs["checkpointing"] = True
        model = cls(op, seed=0, **kwargs)
        return {f"{phase}_s": _train_step_seconds(model, op, x, y, args.steps)}
    from ctrobust.models import FBPConvNet

    model = FBPConvNet(op, args.channels, args.depth, seed=0)
    if phase == "train_fbpconvnet":
        return {"train_fbpconvnet_s": _train_step_seconds(model, op, x, y, args.steps)}
    model.eval()
    if phase == "attack":
        def step():
            d = torch.zeros_like(y, requires_grad=True)
            loss = (model(y + d) - x).pow(2).sum()
            loss.backward()

        return {"attack_s": timeit(step, args.steps)}
    if phase == "lanczos":
        from ctrobust.attacks import perturbation_radius
        from ctrobust.attacks.worst_case import linearized_worst_case

        radius = perturbation_radius(y, 0.01, True)
        t0 = time.perf_counter()
        wc = linearized_worst_case(model, y, x, radius, max_iterations=3, min_iterations=3)
        return {"lanczos_s": (time.perf_counter() - t0) / wc.iterations}
    raise ValueError(f"unknown phase {phase!r}")


def _phase_with_peak(phase: str, size: int, args) -> dict:
    reset_peak()
    row = run_phase(phase, size, args)
    if row:
        key = {"build": "build_peak_mib", "operator": None}.get(phase, f"{phase}_peak_mib")
        if key:
            row[key] = peak_mib()
    return row


def _child(phase: str, size: int, args) -> dict:
    """Run one phase in a fresh process under the address-space limit; its row, or ``{"error": ...}``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", phase, str(size), *args.child_argv]
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": child_error(proc.returncode, proc.stderr, args.memory_limit)}
    return json.loads(lines[-1])


def child_error(returncode: int, stderr: str, limit: float) -> str:
    """Why a phase's process gave no row: over the address-space limit, killed by a signal (SIGKILL: most
    likely the kernel's out-of-memory killer, the machine's memory ran out first), or its last error line."""
    if "MemoryError" in stderr or "can't allocate memory" in stderr or "not enough memory" in stderr:
        return f"over the {limit:g} GiB limit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL:
            return (f"killed by {name} before the {limit:g} GiB limit: most likely the kernel's out-of-memory "
                    "killer (the machine's free memory ran out first)")
        return f"killed by {name}"
    return (stderr.strip().splitlines() or [f"exit status {returncode} without output"])[-1]


def measure_size(size: int, args) -> dict:
    """Every phase at one size: one row (missing keys: not measured; ``errors``: what failed)."""
    row: dict = {"size": size}
    errors = {}
    for phase in args.phases:
        if args.in_process:
            got = _phase_with_peak(phase, size, args)
        else:
            got = _child(phase, size, args)
        if "error" in got:
            errors[phase] = got.pop("error")
        row.update(got)
        print(f"N={size} {phase}: " + (errors.get(phase) or ", ".join(f"{k}={v:.4g}" for k, v in got.items())
                                         or "skipped"), file=sys.stderr, flush=True)
    if errors:
        row["errors"] = errors
    return row


# --- fit and table ------------------------------------------------------------------------------------
def fit_exponent(sizes, values) -> float | None:
    """Least-squares slope of ``log(value)`` against ``log(N)``: ``p`` in ``value ~ c N^p`` (None if < 2 points)."""
    pts = [(math.log(n), math.log(v)) for n, v in zip(sizes, values) if v is not None and v > 0]
    if len(pts) < 2:
        return None
    xs, ys = np.array(pts).T
    return float(np.polyfit(xs, ys, 1)[0])


def exponents(rows: list[dict]) -> dict:
    """``{key: fitted exponent}`` for every fitted column with at least two measured sizes."""
    out = {}
    for _, key, _, fitted in COLUMNS:
        if fitted:
            p = fit_exponent([r["size"] for r in rows if key in r], [r[key] for r in rows if key in r])
            if p is not None:
                out[key] = p
    return out


def markdown_table(rows: list[dict], fits: dict) -> str:
    """The rows and a last row of fitted exponents as a Markdown table (``-``: not measured)."""
    cols = [c for c in COLUMNS if c[1] == "size" or any(c[1] in r for r in rows)]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[key]) if key in r else "-" for _, key, fmt, _ in cols) + " |")
    lines.append("| exponent p (cost ~ N^p) | " + " | ".join(
        f"{fits[key]:.2f}" if key in fits else "-" for _, key, _, _ in cols[1:]) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", help="image sizes N (pixels) (default: 64 128 256 512; --quick: 32 64)")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), metavar="PHASE",
                   help=f"the phases to measure, of {', '.join(PHASES)}")
    p.add_argument("--views", type=int, default=143, help="parallel-beam views on [0, pi)")
    p.add_argument("--batch", type=int, default=8, help="images per batch")
    p.add_argument("--channels", type=int, default=16, help="FBPConvNet U-Net channels")
    p.add_argument("--depth", type=int, default=4, help="FBPConvNet U-Net poolings")
    p.add_argument("--lpd-iterations", type=int, default=2, help="--quick only: LPD iterations (else the paper's 10)")
    p.add_argument("--lpd-channels", type=int, default=8, help="--quick only: LPD channels (else the paper's 32)")
    p.add_argument("--steps", type=int, default=1, help="timed training / attack steps after the warm-up (median)")
    p.add_argument("--repeats", type=int, default=3, help="timed operator repeats (median)")
    p.add_argument("--memory-limit", type=float, default=16.0, help="address-space limit of each phase's process, GiB")
    p.add_argument("--in-process", action="store_true", help="measure in this process (no limit; for tests)")
    p.add_argument("--quick", action="store_true", help="N = 32 64, batch 2, FBPConvNet 8/2, LPD 2 iterations x 8 channels")
    p.add_argument("--output", help="also write the Markdown table to this file (atomically)")
    p.add_argument("--json", help="also write the rows and exponents to this JSON file")
    p.add_argument("--child", nargs=2, metavar=("PHASE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.channels, args.depth, args.repeats = 2, 8, 2, 1
    if args.sizes is None:
        args.sizes = [32, 64] if args.quick else [64, 128, 256, 512]
    args.child_argv = [f"--views={args.views}", f"--batch={args.batch}", f"--channels={args.channels}",
                       f"--depth={args.depth}", f"--steps={args.steps}", f"--repeats={args.repeats}",
                       f"--lpd-iterations={args.lpd_iterations}", f"--lpd-channels={args.lpd_channels}",
                       f"--memory-limit={args.memory_limit}"] + (["--quick"] if args.quick else [])
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        limit = int(args.memory_limit * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        phase, size = args.child[0], int(args.child[1])
        print(json.dumps(_phase_with_peak(phase, size, args)))
        return 0
    import torch

    from ctrobust.files import atomic_write

    saved = os.environ.get("CTROBUST_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="ctrobust-scaling-") as tmp:
        os.environ["CTROBUST_CACHE_DIR"] = tmp  # a fresh build each run; the user's cache is not touched
        try:
            rows = [measure_size(n, args) for n in args.sizes]
        finally:
            if saved is None:
                os.environ.pop("CTROBUST_CACHE_DIR", None)
            else:
                os.environ["CTROBUST_CACHE_DIR"] = saved
    fits = exponents(rows)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    head = (f"Measured {datetime.date.today().isoformat()} on {platform.machine()} {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads"
            + (f", load average at the end {load[0]:.1f}" if load else "")
            + f"; {args.views} views, batch {args.batch}, FBPConvNet {args.channels}/{args.depth}; "
            + ("in one process" if args.in_process else f"each phase in its own process, limit {args.memory_limit:g} GiB")
            + "; peaks are resident memory of the whole process (import baseline included).")
    notes = [f"N={r['size']} {ph}: {err}" for r in rows for ph, err in r.get("errors", {}).items()]
    if lpd_class() is None:
        notes.append("train LPD: ctrobust.models.unrolled is not in this checkout: not measured")
    text = "\n".join([head, "", markdown_table(rows, fits), *([""] + [f"- {n}" for n in notes] if notes else [])])
    print(text)
    if args.output:
        atomic_write(args.output, lambda p: p.write_text(text + "\n"))
    if args.json:
        atomic_write(args.json, lambda p: p.write_text(json.dumps({"rows": rows, "exponents": fits}, indent=2) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
