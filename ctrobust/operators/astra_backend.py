"""ASTRA backend: ASTRA's 2D system matrix, applied by torch as a sparse matrix (CPU and CUDA).

ASTRA builds the system matrix of its CPU projector once per geometry: parallel beam ``linear`` (default),
``line``, ``strip``; fan beam (ASTRA ``fanflat``) ``line_fanflat`` (default) or ``strip_fanflat``, the
only CPU projectors ASTRA 2.x has for ``fanflat``. ctrobust keeps it as two torch sparse CSR matrices with int32 indices, ``A`` (shape
``(A*D, N*N)``) and, stored separately, ``A^T`` (shape ``(N*N, A*D)``), and applies them to the whole
batch in one sparse-dense product. ``A^T`` is the exact transpose, so the backprojection is the exact
adjoint for plain inner products.

Pixel ordering is ASTRA's: an image ``x[row, col]`` is flattened row-major, row 0 at the top
(``y = N/2 - 1/2 - row``), column 0 at the left (``x = col - N/2 + 1/2``); sinogram bin ``(i, j)`` is
angle ``i``, detector bin ``j`` at ``t = j - D/2 + 1/2`` with ``t = x cos(theta) + y sin(theta)``.

Caches
------
* On disk: ``<cache_dir>/radon/radon-<geometry.key()>-<projector>-astra<version>-v1.npz`` (fan beam:
  ``radon-fanflat-...``; the key hashes the geometry type and all its parameters)
  (:func:`ctrobust.cache.cache_dir`), written atomically; a file that cannot be read or does not match
  is rebuilt (with a warning), never trusted.
* In memory: one ``(A, A^T)`` pair per (geometry, projector, device, dtype). float64 matrices share the
  index tensors of the float32 ones; the values are the same numbers (ASTRA's weights are float32).
* CUDA: the same CSR matrices are moved to the GPU once (cuSPARSE through torch); no data leaves the
  GPU after that. No ASTRA CUDA code is involved.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ctrobust.cache import cache_dir
from ctrobust.files import atomic_write
from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D
from ctrobust.operators.sparse import clear_memory_cache, csr_tensor, register_memory_cache, spmm, to_torch_csr

__all__ = [
    "PROJECTORS",
    "FAN_PROJECTORS",
    "projectors_for",
    "default_projector",
    "AstraSparseBackend",
    "astra_geometries",
    "build_system_matrix",
    "BLOCK_VIEWS",
    "system_matrix",
    "torch_matrices",
    "cache_file",
    "clear_memory_cache",
]

#: ASTRA 2D CPU projector types for parallel beam that ctrobust can use.
PROJECTORS = ("linear", "line", "strip")
#: ASTRA 2D CPU projector types for fan beam (``fanflat``); ASTRA 2.x has no other CPU fan-beam projector.
FAN_PROJECTORS = ("line_fanflat", "strip_fanflat")
_FORMAT = 1

_lock = threading.RLock()
# (geometry key, projector) -> (A, A^T) as float32 CPU torch CSR tensors (int32 indices)
_HOST: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
# (geometry key, projector, device string, dtype) -> (A, A^T) on that device/dtype
_DEVICE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _astra():
    try:
        import astra
    except ImportError as exc:  # pragma: no cover - astra-toolbox is a hard dependency
        raise ImportError(
            "the 'astra' Radon backend needs astra-toolbox (pip install astra-toolbox)"
        ) from exc
    return astra


def astra_geometries(geometry: ParallelBeam2D | FanBeam2D, angles: np.ndarray | None = None) -> tuple[dict, dict]:
    """ASTRA volume and projection geometries equal to ``geometry`` (with only the views ``angles``, radians,
    when given).

    The volume is ``N x N`` unit pixels on ``[-N/2, N/2]^2`` (``astra.create_vol_geom(N, N)``); the
    projection geometry is ``parallel`` with detector spacing 1, D bins and the angles
    ``geometry.angles`` (radians), or for :class:`FanBeam2D` ``fanflat`` with its detector spacing, D
    bins, the angles and the source-origin / origin-detector distances (all in pixels).
    """
    astra = _astra()
    n = geometry.image_size
    vol_geom = astra.create_vol_geom(n, n)
    angles = geometry.angles if angles is None else angles
    if isinstance(geometry, FanBeam2D):
        proj_geom = astra.create_proj_geom("fanflat", geometry.detector_spacing, geometry.n_detectors,
                                           angles, geometry.source_origin, geometry.origin_detector)
    else:
        proj_geom = astra.create_proj_geom("parallel", 1.0, geometry.n_detectors, angles)
    return vol_geom, proj_geom


def projectors_for(geometry) -> tuple[str, ...]:
    """The ASTRA CPU projector types that serve ``geometry`` (parallel: :data:`PROJECTORS`, fan: :data:`FAN_PROJECTORS`)."""
    return FAN_PROJECTORS if isinstance(geometry, FanBeam2D) else PROJECTORS


def default_projector(geometry) -> str:
    """``linear`` for parallel beam, ``line_fanflat`` for fan beam."""
    return projectors_for(geometry)[0]


def check_projector(projector: str, geometry=None) -> str:
    valid = PROJECTORS if geometry is None else projectors_for(geometry)
    if projector not in valid:
        kind = "fan" if isinstance(geometry, FanBeam2D) else "parallel"
        raise ValueError(f"unknown ASTRA projector {projector!r} for {kind} beam; choose one of {', '.join(valid)}")
    return projector


#: views per block when ASTRA's system matrix is built (:func:`build_system_matrix`)
BLOCK_VIEWS = 16


def _build_block(geometry: ParallelBeam2D | FanBeam2D, projector: str, angles: np.ndarray):
    """ASTRA's system matrix of ``geometry`` restricted to the views ``angles``: ``(data float32, indices
    int32, row lengths)`` in canonical CSR order; ASTRA's objects and its float64 copy are freed here."""
    astra = _astra()
    vol_geom, proj_geom = astra_geometries(geometry, angles)
    pid = astra.create_projector(projector, proj_geom, vol_geom)
    mid = None
    try:
        mid = astra.projector.matrix(pid)
        mat = sp.csr_matrix(astra.matrix.get(mid))
    finally:
        if mid is not None:
            astra.matrix.delete(mid)
        astra.projector.delete(pid)
    mat.sum_duplicates()  # canonical: sorted column indices, no duplicates
    # ASTRA computes its weights in float32: the cast is exact.
    return mat.data.astype(np.float32), mat.indices.astype(np.int32), np.diff(mat.indptr)


def build_system_matrix(geometry: ParallelBeam2D | FanBeam2D, projector: str | None = None, *,
                        block_views: int = BLOCK_VIEWS) -> sp.csr_matrix:
    """Build ASTRA's system matrix (no cache), ``block_views`` views at a time.

    ASTRA hands its matrix over as a float64 SciPy copy; building it per block of views (the rows of a
    block are consecutive) keeps that copy to one block, so the peak memory is about 1.5 times the
    float32 result (512 px, 143 views: 0.54 GB) instead of about 3.5 times. Each view's rows do not
    depend on the other views, so the result is the same matrix as one built in one piece
    (``block_views >= n_angles``).

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 values, int32 indices, shape ``(A*D, N*N)``: row ``i*D + j`` is angle i, bin j;
        column ``r*N + c`` is pixel (row r, column c). ASTRA objects are freed before returning.
    """
    projector = check_projector(projector or default_projector(geometry), geometry)
    if int(block_views) < 1:
        raise ValueError(f"block_views must be >= 1, got {block_views!r}")
    angles = np.asarray(geometry.angles, dtype=np.float64)
    blocks = [_build_block(geometry, projector, angles[i:i + block_views])
              for i in range(0, len(angles), int(block_views))]
    lengths = np.concatenate([b[2] for b in blocks])
    indptr = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if indptr[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"the system matrix has {indptr[-1]} non-zeros, more than int32 indices can address")
    nnz = int(indptr[-1])
    # assemble one array at a time, dropping each block's part once copied (peak: blocks + one array)
    assembled = []
    for part, dtype in ((0, np.float32), (1, np.int32)):
        out = np.empty(nnz, dtype=dtype)
        assembled.append(out)
        pos = 0
        for i, block in enumerate(blocks):
            arr = block[part]
            out[pos:pos + arr.size] = arr
            pos += arr.size
            blocks[i] = block[:part] + (None,) + block[part + 1:]
        del arr, block
    data, indices = assembled
    shape = (geometry.n_angles * geometry.n_detectors, geometry.image_size**2)
    return sp.csr_matrix((data, indices, indptr.astype(np.int32)), shape=shape)


def cache_file(geometry: ParallelBeam2D | FanBeam2D, projector: str | None = None) -> Path:
    """Disk-cache file of a system matrix (keyed by geometry type and parameters, projector and ASTRA version)."""
    astra = _astra()
    projector = projector or default_projector(geometry)
    version = str(astra.__version__).replace("/", "_")
    kind = "fanflat-" if isinstance(geometry, FanBeam2D) else ""
    return cache_dir("radon") / f"radon-{kind}{geometry.key()}-{projector}-astra{version}-v{_FORMAT}.npz"


def _meta(geometry: ParallelBeam2D, projector: str) -> dict:
    return {
        "format": _FORMAT,
        "geometry": geometry.to_config(),
        "key": geometry.key(),
        "projector": projector,
        "astra_version": str(_astra().__version__),
    }


def _save(path: Path, mat: sp.csr_matrix, meta: dict) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                meta=np.array(json.dumps(meta, sort_keys=True)),
                shape=np.array(mat.shape, dtype=np.int64),
                indptr=mat.indptr,
                indices=mat.indices,
                data=mat.data,
            )

    atomic_write(path, write)


def _load(path: Path, meta: dict, shape: tuple[int, int]) -> sp.csr_matrix:
    """Load and validate a cached matrix; raise ValueError (or an I/O error) if it is not usable."""
    with np.load(path, allow_pickle=False) as f:
        stored = json.loads(str(f["meta"]))
        if stored != meta:
            raise ValueError(f"metadata mismatch: {stored} != {meta}")
        if tuple(int(s) for s in f["shape"]) != shape:
            raise ValueError(f"shape mismatch: {tuple(f['shape'])} != {shape}")
        indptr, indices, data = f["indptr"], f["indices"], f["data"]
    if indptr.dtype != np.int32 or indices.dtype != np.int32 or data.dtype != np.float32:
        raise ValueError("unexpected dtypes")
    if indptr.shape != (shape[0] + 1,) or indptr[0] != 0 or indptr[-1] != indices.size != data.size:
        raise ValueError("inconsistent CSR arrays")
    if indices.size and (indices.min() < 0 or indices.max() >= shape[1]):
        raise ValueError("column index out of range")
    if np.any(np.diff(indptr) < 0) or not np.all(np.isfinite(data)):
        raise ValueError("corrupt CSR arrays")
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def system_matrix(geometry: ParallelBeam2D | FanBeam2D, projector: str | None = None, *,
                  use_disk: bool = True) -> sp.csr_matrix:
    """The system matrix from the disk cache, or built by ASTRA (and then cached on disk).

    A cache file that is unreadable, truncated or describes something else is rebuilt with a
    ``RuntimeWarning``. ``use_disk=False`` always builds and writes nothing.
    """
    projector = check_projector(projector or default_projector(geometry), geometry)
    shape = (geometry.n_angles * geometry.n_detectors, geometry.image_size**2)
    if not use_disk:
        return build_system_matrix(geometry, projector)
    path = cache_file(geometry, projector)
    meta = _meta(geometry, projector)
    if path.exists():
        try:
            return _load(path, meta, shape)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
            warnings.warn(f"rebuilding the Radon system-matrix cache {path}: {exc}", RuntimeWarning, stacklevel=2)
    mat = build_system_matrix(geometry, projector)
    try:
        _save(path, mat, meta)
    except OSError as exc:
        warnings.warn(f"could not write the Radon system-matrix cache {path}: {exc}", RuntimeWarning, stacklevel=2)
    return mat


def host_matrices(geometry: ParallelBeam2D, projector: str) -> tuple[torch.Tensor, torch.Tensor]:
    key = (geometry.key(), projector)
    with _lock:
        if key not in _HOST:
            mat = system_matrix(geometry, projector)
            mat_t = mat.T.tocsr()  # CSC of A viewed as CSR of A^T: an exact transpose
            mat_t.indices = mat_t.indices.astype(np.int32, copy=False)
            mat_t.indptr = mat_t.indptr.astype(np.int32, copy=False)
            mat_t.sort_indices()
            _HOST[key] = (to_torch_csr(mat), to_torch_csr(mat_t))
        return _HOST[key]


def concrete_device(device) -> torch.device:
    """``device`` as a torch.device, ``cuda`` resolved to the current CUDA device (a stable cache key)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def torch_matrices(
    geometry: ParallelBeam2D | FanBeam2D,
    projector: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, A^T)`` as torch sparse CSR tensors (int32 indices) on ``device`` with ``dtype``.

    Built once per (geometry, projector) and kept in memory per (device, dtype); float64 copies are
    made lazily and share the index tensors of the float32 ones on the same device.
    """
    projector = projector or default_projector(geometry)
    device = concrete_device(device)
    key = (geometry.key(), projector, str(device), dtype)
    with _lock:
        hit = _DEVICE.get(key)
        if hit is not None:
            return hit
        if device.type == "cpu" and dtype == torch.float32:
            pair = host_matrices(geometry, projector)
        elif dtype == torch.float32:
            pair = tuple(m.to(device) for m in host_matrices(geometry, projector))
        else:
            base = torch_matrices(geometry, projector, device, torch.float32)
            pair = tuple(csr_tensor(m.crow_indices(), m.col_indices(), m.values().to(dtype), m.shape) for m in base)
        _DEVICE[key] = pair
        return pair


@register_memory_cache
def _clear(geometry=None) -> None:
    """Drop ASTRA's system matrices held in memory, of one ``geometry`` or all (registered in
    :mod:`ctrobust.operators.sparse`; :func:`clear_memory_cache` clears every module's)."""
    with _lock:
        if geometry is None:
            _HOST.clear()
            _DEVICE.clear()
            return
        key = geometry.key()
        for cache in (_HOST, _DEVICE):
            for k in [k for k in cache if k[0] == key]:
                del cache[k]


class AstraSparseBackend:
    """Radon transform by ASTRA's system matrix applied with torch sparse CSR products.

    Parameters
    ----------
    geometry : ParallelBeam2D or FanBeam2D
    projector : str, optional
        ASTRA 2D projector whose system matrix is used: parallel beam ``linear`` (Joseph-type linear
        interpolation, the default), ``line``, ``strip``; fan beam ``line_fanflat`` (default) or
        ``strip_fanflat`` (area-integrating).

    Notes
    -----
    The backend holds no tensors itself (matrices live in the module caches), so copying or pickling
    an operator that uses it is cheap.
    """

    name = "astra"

    def __init__(self, geometry: ParallelBeam2D | FanBeam2D, projector: str | None = None):
        self.geometry = geometry
        self.projector = check_projector(projector or default_projector(geometry), geometry)

    def check_device(self, t: torch.Tensor) -> None:
        if t.device.type not in ("cpu", "cuda"):
            raise ValueError(
                f"RadonTransform(backend='astra') works on CPU and CUDA tensors, got a tensor on {t.device}"
            )

    def matrices(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return torch_matrices(self.geometry, self.projector, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, N, N) -> (B, 1, A, D)``."""
        g = self.geometry
        mat, _ = self.matrices(x.device, x.dtype)
        out = spmm(mat, x.reshape(x.shape[0], -1))
        return out.reshape(x.shape[0], 1, g.n_angles, g.n_detectors)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, 1, A, D) -> (B, 1, N, N)``."""
        n = self.geometry.image_size
        _, mat_t = self.matrices(y.device, y.dtype)
        out = spmm(mat_t, y.reshape(y.shape[0], -1))
        return out.reshape(y.shape[0], 1, n, n)

    def matrix_nbytes(self) -> int:
        """Bytes of the float32 CPU matrices ``A`` and ``A^T`` together (values + indices)."""
        total = 0
        for m in host_matrices(self.geometry, self.projector):
            total += sum(t.numel() * t.element_size() for t in (m.crow_indices(), m.col_indices(), m.values()))
        return total
