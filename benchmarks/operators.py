"""Speed of ctrobust's Radon operator against the peers a user would pick instead, in one run.

Measures, per batch, forward, adjoint, forward+backward (autograd, the training / attack step) and FBP
at 128 and 256 px, 143 views, batch 1 and 8, for

* ctrobust ``RadonTransform`` (ASTRA's ``linear`` system matrix as torch sparse CSR, batch at once);
* ASTRA's own CPU projector (``astra.projector.direct_FP/BP`` and its ``FBP`` algorithm), looping
  over the batch on a thread pool (ASTRA releases the GIL), with a custom autograd wrapper for
  forward+backward;
* ODL 1.0 ``RayTransform`` (astra_cpu) through ``odl.contrib.torch.OperatorModule`` (and ODL's
  ``fbp_op``);
* scikit-image ``radon`` / ``iradon`` (loop over the batch; no autograd; its "adjoint" is the
  unfiltered ``iradon``);
* deepinv ``Tomography`` when importable (otherwise reported as skipped).

Fan-beam rows (``--geometries fan``; ``FanBeam2D`` defaults, 143 views on [0, 2 pi)): ctrobust against ASTRA's
own CPU fan-beam projector (``line_fanflat``, ``direct_FP/BP`` in the same thread-pool loop) and ODL's
``FanBeamGeometry`` ``RayTransform`` / ``fbp_op``. ASTRA 2.x has no CPU fan-beam FBP (its ``FBP`` refuses
``fanflat``; only ``FBP_CUDA`` has one), so ASTRA's FBP cell is empty there; scikit-image and deepinv
have no fan beam.

Prints one Markdown table (median milliseconds per batch, and ratio peer / ctrobust) plus the memory
of the cached matrix. Usage::

    python benchmarks/operators.py            # full run (a few minutes on 2 cores)
    python benchmarks/operators.py --quick    # 128 px only, one repeat
    python benchmarks/operators.py --output docs/perf-table.md
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from ctrobust import FanBeam2D, ParallelBeam2D, RadonTransform
from ctrobust.files import atomic_write

OPS = ("forward", "adjoint", "fwd+bwd", "fbp")


def timeit(fn, repeats: int, budget_s: float = 20.0) -> float:
    """Median wall time in ms of ``fn()`` after one warm-up call; fewer repeats for slow calls."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    n = repeats if first * repeats < budget_s else 1
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


# --- the candidates: each returns {op: callable} for a batch x (B,1,N,N) and sinogram y (B,1,A,D) ------
def ctrobust_cases(geometry, x, y):
    op = RadonTransform(geometry, backend="astra")
    xg = x.clone().requires_grad_()

    def fwd_bwd():
        op(xg).backward(y)

    return op, {
        "forward": lambda: op(x),
        "adjoint": lambda: op.adjoint(y),
        "fwd+bwd": fwd_bwd,
        "fbp": lambda: op.fbp(y),
    }


def astra_cases(geometry, x, y, pool):
    import astra

    from ctrobust.operators.astra_backend import astra_geometries, default_projector

    vol_geom, proj_geom = astra_geometries(geometry)
    pid = astra.create_projector(default_projector(geometry), proj_geom, vol_geom)
    a, d, n = geometry.n_angles, geometry.n_detectors, geometry.image_size

    def fp(xb: torch.Tensor) -> torch.Tensor:
        xb = xb.detach().contiguous()
        out = torch.empty(xb.shape[0], 1, a, d)

        def one(i):
            astra.projector.direct_FP(pid, xb[i, 0], out=out[i, 0])

        list(pool.map(one, range(xb.shape[0])))
        return out

    def bp(yb: torch.Tensor) -> torch.Tensor:
        yb = yb.detach().contiguous()
        out = torch.empty(yb.shape[0], 1, n, n)

        def one(i):
            astra.projector.direct_BP(pid, yb[i, 0], out=out[i, 0])

        list(pool.map(one, range(yb.shape[0])))
        return out

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return fp(t)

        @staticmethod
        def backward(ctx, g):
            return bp(g)

    def fbp(yb):
        def one(i):
            sid = astra.data2d.create("-sino", proj_geom, yb[i, 0].numpy())
            rid = astra.data2d.create("-vol", vol_geom, 0)
            cfg = astra.astra_dict("FBP")
            cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid)
            aid = astra.algorithm.create(cfg)
            astra.algorithm.run(aid)
            rec = astra.data2d.get(rid)
            astra.algorithm.delete(aid)
            astra.data2d.delete([sid, rid])
            return rec

        return np.stack(list(pool.map(one, range(yb.shape[0]))))

    xg = x.clone().requires_grad_()
    cases = {
        "forward": lambda: fp(x),
        "adjoint": lambda: bp(y),
        "fwd+bwd": lambda: Fn.apply(xg).backward(y),
        "fbp": lambda: fbp(y),
    }
    if isinstance(geometry, FanBeam2D):
        del cases["fbp"]  # ASTRA's CPU FBP: "FBP currently only supports parallel projection geometries"
    return pid, cases


def odl_cases(geometry, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from odl.applications import tomo
        from odl.contrib.torch import OperatorModule

    from ctrobust.operators.odl_backend import odl_ray_transform

    ray = odl_ray_transform(geometry)
    fwd, adj, fbp = OperatorModule(ray), OperatorModule(ray.adjoint), OperatorModule(tomo.fbp_op(ray))
    xg = x.clone().requires_grad_()
    return {
        "forward": lambda: fwd(x),
        "adjoint": lambda: adj(y),
        "fwd+bwd": lambda: fwd(xg).backward(y),
        "fbp": lambda: fbp(y),
    }


def skimage_cases(geometry, x, y):
    from skimage.transform import iradon, radon

    theta = np.degrees(geometry.angles)
    n = geometry.image_size
    xs = x[:, 0].double().numpy()
    ys = [radon(img, theta, circle=False) for img in xs[:1]] * x.shape[0]  # (nd, A) layout
    return {
        "forward": lambda: [radon(img, theta, circle=False) for img in xs],
        "adjoint": lambda: [iradon(s, theta, circle=False, filter_name=None, output_size=n) for s in ys],
        "fbp": lambda: [iradon(s, theta, circle=False, filter_name="ramp", output_size=n) for s in ys],
    }


def deepinv_cases(geometry, x, y):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from deepinv.physics import Tomography
    except Exception as exc:  # noqa: BLE001 - any import failure means "skipped"
        return f"skipped: deepinv not importable ({type(exc).__name__})"
    phys = Tomography(
        angles=torch.from_numpy(np.degrees(geometry.angles)).float(),
        img_width=geometry.image_size,
        circle=False,
        normalize=False,
    )
    yd = phys.A(x)
    xg = x.clone().requires_grad_()
    return {
        "forward": lambda: phys.A(x),
        "adjoint": lambda: phys.A_adjoint(yd),
        "fwd+bwd": lambda: phys.A(xg).backward(yd),
        "fbp": lambda: phys.A_dagger(yd, fbp=True),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="image sizes N (pixels)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes B")
    parser.add_argument("--views", type=int, default=143, help="number of angles (on [0, pi) parallel, [0, 2 pi) fan)")
    parser.add_argument("--geometries", nargs="+", default=["parallel", "fan"], choices=["parallel", "fan"],
                        help="beam geometries to measure (fan: FanBeam2D defaults)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per cell (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads and ASTRA loop workers")
    parser.add_argument("--quick", action="store_true", help="128 px only, one repeat")
    parser.add_argument("--skip", nargs="*", default=[], help="peers to skip: astra odl skimage deepinv")
    parser.add_argument("--output", help="also write the Markdown table to this file (atomically)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [128], 1
    torch.set_num_threads(args.threads)
    pool = cf.ThreadPoolExecutor(args.threads)
    gen = torch.Generator().manual_seed(0)

    lines = [
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}; median ms per batch; "
        f"ratio = peer / ctrobust (higher = ctrobust faster); {args.views} views.",
        "",
        "| geometry | N | B | method | " + " | ".join(OPS) + " | ratio " + " | ratio ".join(OPS) + " |",
        "|---|---|---|---|" + "---|" * (2 * len(OPS)),
    ]
    notes = []
    for kind, n in [(k, n) for k in args.geometries for n in args.sizes]:
        geometry = FanBeam2D(n, args.views) if kind == "fan" else ParallelBeam2D(n, args.views)
        t0 = time.perf_counter()
        RadonTransform(geometry)(torch.zeros(1, 1, n, n))  # build or load the matrix
        build = time.perf_counter() - t0
        for b in args.batches:
            x = torch.rand(b, 1, n, n, generator=gen)
            y = torch.rand(b, 1, args.views, geometry.n_detectors, generator=gen)
            op, cases = ctrobust_cases(geometry, x, y)
            results = {"ctrobust (astra sparse)": {k: timeit(f, args.repeats) for k, f in cases.items()}}
            if b == args.batches[0]:
                notes.append(
                    f"{kind} {n} px: cached matrix A + A^T {op._backend.matrix_nbytes() / 2**20:.0f} MiB "
                    f"(float32 values, int32 indices; float64 inputs add a float64 copy of the values); "
                    f"first construction in this run {build:.1f} s (build or disk-cache load)"
                )
            peers = {
                "astra": lambda: astra_cases(geometry, x, y, pool)[1],
                "odl": lambda: odl_cases(geometry, x, y),
                "skimage": lambda: skimage_cases(geometry, x, y),
                "deepinv": lambda: deepinv_cases(geometry, x, y),
            }
            if kind == "fan":  # no fan beam in scikit-image or deepinv
                peers = {k: v for k, v in peers.items() if k in ("astra", "odl")}
            labels = {
                "astra": f"ASTRA CPU projector{' (line_fanflat)' if kind == 'fan' else ''}, loop on {args.threads} threads",
                "odl": "ODL OperatorModule(RayTransform)",
                "skimage": "skimage radon/iradon, loop",
                "deepinv": "deepinv Tomography",
            }
            for key, make in peers.items():
                if key in args.skip:
                    continue
                try:
                    peer = make()
                except Exception as exc:  # noqa: BLE001 - report, keep going
                    peer = f"skipped: {type(exc).__name__}: {exc}"
                if isinstance(peer, str):
                    if (n, b) == (args.sizes[0], args.batches[0]) and kind == args.geometries[0]:
                        notes.append(f"{labels[key]}: {peer}")
                    continue
                results[labels[key]] = {k: timeit(f, args.repeats) for k, f in peer.items()}
            base = results["ctrobust (astra sparse)"]
            for method, row in results.items():
                cells = [f"{row[k]:.1f}" if k in row else "-" for k in OPS]
                ratios = [f"{row[k] / base[k]:.1f}x" if k in row else "-" for k in OPS]
                lines.append(f"| {kind} | {n} | {b} | {method} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
            print(f"done {kind} N={n} B={b}", file=sys.stderr, flush=True)
    lines += ["", *(f"- {note}" for note in notes)]
    text = "\n".join(lines)
    print(text)
    if args.output:
        atomic_write(args.output, lambda p: p.write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
