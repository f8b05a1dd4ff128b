"""Compressed-sensing operators on vectorised images.

Every operator here is a :class:`~ctrobust.operators.base.LinearOperator` with
``domain_shape == (n,)`` and ``range_shape == (m,)``: it maps vectorised images ``(B, n)`` to
measurements ``(B, m)``; ``adjoint`` maps ``(B, m) -> (B, n)``. ``image_shape`` is the image the
vector reshapes to (row-major, ``x.reshape(B, *image_shape)``). All three offer

- ``pinv(y)``: the Moore-Penrose pseudo-inverse ``A^+ y``, ``(B, m) -> (B, n)``, computed in float64
  and returned in the input's dtype;
- ``singular_values()``: float64 tensor of the ``min(m, n)`` singular values, descending;
- ``cond()``: ``sigma_max / sigma_min`` (``inf`` if a singular value is exactly zero);
- ``to_dense()``: the float64 ``(m, n)`` matrix;
- ``to_config()`` / :func:`cs_operator_from_config`: a JSON-able description that rebuilds the operator
  bit-for-bit (the matrices are regenerated from the seed and are not stored in ``state_dict``).

Operators:

- :class:`GaussianCS`: iid ``N(0, 1/m)`` entries, dense (well conditioned for ``m << n``).
- :class:`PartialDCT`: ``m`` rows of the orthonormal 2D DCT-II, applied by FFT-based fast transforms
  (never a dense matrix); all singular values are 1, ``pinv == adjoint``.
- :class:`DCTSubmatrix`: ``m`` rows and ``n`` columns of a larger orthonormal 1D DCT-II; ill
  conditioned by construction (a time-limited window seen through a near-critical set of low
  frequencies).

Randomness comes only from ``torch.Generator().manual_seed(seed)``; the global RNG is untouched.
Moving an operator (``op.to(device)``) keeps its float64 master copy in float64; float32 inputs are
served by a cached float32 copy, so the output dtype equals the input dtype.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ctrobust.errors import CtrobustError
from ctrobust.operators.base import LinearOperator, check_batch

__all__ = [
    "CSOperator",
    "GaussianCS",
    "PartialDCT",
    "DCTSubmatrix",
    "MatrixOperator",
    "dct_matrix",
    "dct_ortho",
    "idct_ortho",
    "cs_operator_from_config",
]


class CSArgumentError(CtrobustError, ValueError):
    """Invalid constructor argument of a CS operator (a ``ValueError`` the CLI prints as a user error)."""


# --------------------------------------------------------------------------------------------------
# Fast orthonormal DCT-II / DCT-III in torch (Makhoul's N-point FFT algorithm); any device, autograd.
# --------------------------------------------------------------------------------------------------
def _dct_scale(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=dtype, device=device)
    scale[0] = math.sqrt(1.0 / n)
    return scale


def _twiddle(n: int, dtype: torch.dtype, device: torch.device, sign: float) -> torch.Tensor:
    k = torch.arange(n, dtype=dtype, device=device)
    return torch.polar(torch.ones_like(k), sign * math.pi * k / (2 * n))


def dct_ortho(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DCT-II along ``dim`` (equals ``scipy.fft.dct(x, type=2, norm="ortho")``).

    ``X_k = s_k sum_j x_j cos(pi k (2 j + 1) / (2 N))`` with ``s_0 = sqrt(1/N)``, ``s_k = sqrt(2/N)``.
    Real float32/float64 input of any shape; same shape and dtype out; differentiable.
    """
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    spec = torch.fft.fft(v, dim=-1)
    out = (spec * _twiddle(n, x.dtype, x.device, -1.0)).real * _dct_scale(n, x.dtype, x.device)
    return out.movedim(-1, dim)


def idct_ortho(X: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse (= transpose) of :func:`dct_ortho`: the orthonormal DCT-III along ``dim``."""
    X = X.movedim(dim, -1)
    n = X.shape[-1]
    c = X / _dct_scale(n, X.dtype, X.device)
    c_rev = torch.cat([torch.zeros_like(c[..., :1]), c.flip(-1)[..., : n - 1]], dim=-1)  # c_{N-k}, c_N = 0
    spec = torch.complex(c, -c_rev) * _twiddle(n, X.dtype, X.device, 1.0)
    v = torch.fft.ifft(spec, dim=-1).real
    half = (n + 1) // 2
    x = torch.empty_like(v)
    x[..., ::2] = v[..., :half]
    x[..., 1::2] = v[..., half:].flip(-1)
    return x.movedim(-1, dim)


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------
def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CSArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        shape = tuple(value)
    except TypeError:
        raise CSArgumentError(f"{name} must be a tuple of positive integers, got {value!r}") from None
    if not shape:
        raise CSArgumentError(f"{name} must have at least one dimension, got {value!r}")
    return tuple(_positive_int(s, f"{name} entry") for s in shape)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise CSArgumentError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# shared base
# --------------------------------------------------------------------------------------------------
class CSOperator(LinearOperator):
    """Common machinery of the CS operators: ``(B, n) -> (B, m)``.

    Subclasses implement ``_matvec`` / ``_rmatvec`` and list their float64 buffers in
    ``_FLOAT64_BUFFERS`` (kept float64 when the module is cast with ``.float()`` / ``.to(dtype)``).
    """

    _FLOAT64_BUFFERS: tuple[str, ...] = ()

    def __init__(self, m: int, n: int, image_shape: tuple[int, ...]):
        super().__init__((n,), (m,))
        self.m = m
        self.n = n
        self.image_shape = image_shape
        self._cache: dict = {}

    def _apply(self, fn, *args, **kwargs):  # nn.Module's hook behind .to() / .cuda() / .double()
        # Keep the float64 master copies float64 whatever dtype the module is cast to (devices follow).
        saved = {name: self._buffers[name] for name in self._FLOAT64_BUFFERS if name in self._buffers}
        result = nn.Module._apply(self, fn, *args, **kwargs)
        for name, old in saved.items():
            self._buffers[name] = old.to(device=self._buffers[name].device)
        self._cache.clear()
        return result

    @property
    def device(self) -> torch.device:
        """The device the operator's buffers live on (inputs must be there too)."""
        return next(iter(self._buffers.values())).device

    def _check_device(self, t: torch.Tensor) -> None:
        if t.device != self.device:
            raise ValueError(
                f"{self.name}: input is on {t.device} but the operator is on {self.device}; "
                f"move one of them (op.to(device) or x.to(device))"
            )

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- linear algebra -------------------------------------------------------------------------
    def to_dense(self) -> torch.Tensor:
        """The matrix ``A``, float64 ``(m, n)`` on the operator's device."""
        raise NotImplementedError

    def _svd(self):
        """Cached thin SVD ``A = U diag(s) V^T`` in float64: ``U (m, r)``, ``s (r,)`` descending, ``Vh (r, n)``."""
        return self._cached(("svd", self.device), lambda: torch.linalg.svd(self.to_dense(), full_matrices=False))

    def singular_values(self) -> torch.Tensor:
        """The ``min(m, n)`` singular values, float64, descending, on the operator's device."""
        return self._svd()[1].clone()

    def cond(self) -> float:
        """Condition number ``sigma_max / sigma_min`` of the ``min(m, n)`` singular values (inf if singular)."""
        s = self.singular_values()
        smin = float(s[-1])
        return math.inf if smin == 0.0 else float(s[0]) / smin

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Pseudo-inverse ``A^+ y``: ``(B, m) -> (B, n)``, computed in float64, returned in ``y.dtype``.

        Singular values ``<= rcond * sigma_max`` count as zero (their inverse is replaced by 0).
        Differentiable (plain torch operations).
        """
        check_batch(y, self.range_shape, "pinv input", name=self.name)
        self._check_device(y)
        u, s, vh = self._svd()
        cutoff = self.rcond * float(s[0])
        inv = torch.where(s > cutoff, 1.0 / s, torch.zeros_like(s))
        return (((y.to(torch.float64) @ u) * inv) @ vh).to(y.dtype)

    @property
    def rcond(self) -> float:
        """Relative cut-off of :meth:`pinv` (default ``max(m, n) * float64 eps``, numpy's convention)."""
        value = getattr(self, "_rcond", None)
        return max(self.m, self.n) * float(np.finfo(np.float64).eps) if value is None else value

    # -- serialisation --------------------------------------------------------------------------
    def to_config(self) -> dict:
        """JSON-able description; :func:`ctrobust.operators.base.operator_from_config` rebuilds the same operator."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> "CSOperator":
        kwargs = {k: v for k, v in config.items() if k != "type"}
        if kwargs.get("image_shape") is not None:
            kwargs["image_shape"] = tuple(kwargs["image_shape"])
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")


# --------------------------------------------------------------------------------------------------
class DenseCSOperator(CSOperator):
    """A CS operator stored as a dense float64 ``matrix`` buffer (m, n); float32 copies are cached."""

    def _matrix(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype == torch.float64:
            return self.matrix
        return self._cached(("matrix", dtype, self.device), lambda: self.matrix.to(dtype))

    def _matvec(self, x):
        return x @ self._matrix(x.dtype).T

    def _rmatvec(self, y):
        return y @ self._matrix(y.dtype)

    def to_dense(self) -> torch.Tensor:
        return self.matrix.clone()


class GaussianCS(DenseCSOperator):
    """Gaussian measurements: ``A`` has iid ``N(0, 1/m)`` entries, ``(B, n) -> (B, m)``.

    Parameters
    ----------
    m : int
        Number of measurements (``m > n`` is allowed: an over-determined system).
    image_shape : tuple of int or int
        Image the vector reshapes to (row-major); ``n = prod(image_shape)``. An int means a 1D signal.
    seed : int
        Seed of the private ``torch.Generator`` that draws ``A`` (float64; global RNG untouched).

    Notes
    -----
    ``A`` is stored once in float64 (a non-persistent buffer: rebuilt from the seed, not saved in
    ``state_dict``); float32 inputs use a cached float32 copy. ``pinv`` uses a cached float64 SVD.
    ``E ||A x||^2 = ||x||^2``.

    Examples
    --------
    >>> op = GaussianCS(16, (8, 8), seed=0)
    >>> op(torch.ones(2, 64)).shape
    torch.Size([2, 16])
    >>> op.dot_test() < 1e-12
    True
    """

    _FLOAT64_BUFFERS = ("matrix",)

    def __init__(self, m: int, image_shape: Sequence[int] | int, seed: int = 0):
        m = _positive_int(m, "m")
        shape = _shape(image_shape, "image_shape")
        self.seed = _seed(seed)
        super().__init__(m, math.prod(shape), shape)
        gen = torch.Generator().manual_seed(self.seed)
        matrix = torch.randn(m, self.n, generator=gen, dtype=torch.float64) / math.sqrt(m)
        self.register_buffer("matrix", matrix, persistent=False)

    def to_config(self) -> dict:
        return {"type": "GaussianCS", "m": self.m, "image_shape": list(self.image_shape), "seed": self.seed}


# --------------------------------------------------------------------------------------------------
class PartialDCT(CSOperator):
    """``m`` rows of the orthonormal DCT-II of the image, applied by fast transforms: ``(B, n) -> (B, m)``.

    ``A x = (DCT(x.reshape(image_shape)).flatten())[indices]`` where DCT is the orthonormal DCT-II
    along every image axis (2D for ``(H, W)`` images), computed with torch FFTs on the input's device
    (:func:`dct_ortho`); no dense matrix is formed. The adjoint zero-fills the unmeasured
    coefficients and applies the inverse DCT. The rows are orthonormal (``A A^T = I``): every
    singular value is 1, ``cond() == 1`` and ``pinv == adjoint``.

    Parameters
    ----------
    m : int
        Number of measured DCT coefficients, ``1 <= m <= n``.
    image_shape : tuple of int or int
        Image shape, e.g. ``(28, 28)`` (any number of axes; an int is a 1D signal).
    seed : int
        Seed of the private generator choosing the frequencies.
    low_frequencies : int
        How many of the lowest frequencies are always measured (``0 <= low_frequencies <= m``).
        "Lowest" orders the frequency index tuples ``k`` by ``sum_d (k_d / shape_d)^2`` (ties by
        flat index), so with ``low_frequencies >= 1`` the DC coefficient is always kept. The
        remaining ``m - low_frequencies`` are drawn uniformly without replacement from the rest.
        Default 0: all ``m`` are drawn at random (the DC term is not guaranteed).

    Attributes
    ----------
    indices : torch.Tensor
        The ``m`` measured flat (row-major) frequency indices, sorted ascending; row ``i`` of ``A``
        is the DCT basis image of frequency ``np.unravel_index(indices[i], image_shape)``.

    Examples
    --------
    >>> op = PartialDCT(20, (8, 8), seed=1, low_frequencies=4)
    >>> {0, 1, 8, 9} <= set(op.indices.tolist())  # (0,0), (0,1), (1,0), (1,1) always measured
    True
    >>> op.cond()
    1.0
    """

    def __init__(self, m: int, image_shape: Sequence[int] | int, seed: int = 0, low_frequencies: int = 0):
        m = _positive_int(m, "m")
        shape = _shape(image_shape, "image_shape")
        n = math.prod(shape)
        if m > n:
            raise CSArgumentError(f"PartialDCT: m = {m} rows exceed n = {n} = prod(image_shape) DCT coefficients")
        if isinstance(low_frequencies, bool) or not isinstance(low_frequencies, (int, np.integer)) or not (
            0 <= low_frequencies <= m
        ):
            raise CSArgumentError(f"low_frequencies must be an integer in [0, m = {m}], got {low_frequencies!r}")
        self.seed = _seed(seed)
        self.low_frequencies = int(low_frequencies)
        super().__init__(m, n, shape)
        grids = np.meshgrid(*[np.arange(s) / s for s in shape], indexing="ij")
        radius = sum(g.astype(np.float64) ** 2 for g in grids).ravel()
        order = np.argsort(radius, kind="stable")
        low = torch.from_numpy(order[: self.low_frequencies].copy())
        rest = torch.from_numpy(order[self.low_frequencies :].copy())
        gen = torch.Generator().manual_seed(self.seed)
        picked = rest[torch.randperm(rest.numel(), generator=gen)[: m - self.low_frequencies]]
        indices, _ = torch.sort(torch.cat([low, picked]).long())
        self.register_buffer("indices", indices, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def _dct(self, img: torch.Tensor, inverse: bool) -> torch.Tensor:
        fn = idct_ortho if inverse else dct_ortho
        for axis in range(1, img.dim()):
            img = fn(img, dim=axis)
        return img

    def _matvec(self, x):
        coeffs = self._dct(x.reshape(x.shape[0], *self.image_shape), inverse=False)
        return coeffs.reshape(x.shape[0], self.n)[:, self.indices]

    def _rmatvec(self, y):
        full = y.new_zeros(y.shape[0], self.n)
        full[:, self.indices] = y
        img = self._dct(full.reshape(y.shape[0], *self.image_shape), inverse=True)
        return img.reshape(y.shape[0], self.n)

    def frequencies(self) -> np.ndarray:
        """The measured frequency index tuples, ``(m, len(image_shape))`` int array."""
        return np.stack(np.unravel_index(self.indices.cpu().numpy(), self.image_shape), axis=1)

    def to_dense(self) -> torch.Tensor:
        """The ``(m, n)`` float64 matrix (built by transforming the identity; for tests and small n)."""
        eye = torch.eye(self.n, dtype=torch.float64, device=self.device)
        return self._matvec(eye).T.contiguous()

    def singular_values(self) -> torch.Tensor:
        return torch.ones(self.m, dtype=torch.float64, device=self.device)

    def cond(self) -> float:
        return 1.0

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``A^+ y = A^T y`` (orthonormal rows): ``(B, m) -> (B, n)``, same dtype as ``y``."""
        check_batch(y, self.range_shape, "pinv input", name=self.name)
        return self.adjoint(y)

    def to_config(self) -> dict:
        return {
            "type": "PartialDCT",
            "m": self.m,
            "image_shape": list(self.image_shape),
            "seed": self.seed,
            "low_frequencies": self.low_frequencies,
        }


# --------------------------------------------------------------------------------------------------
def dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``C[k, j] = s_k cos(pi k (2 j + 1) / (2 size))``, float64."""
    k = np.arange(size)[:, None]
    j = np.arange(size)[None, :]
    c = np.cos(np.pi * k * (2 * j + 1) / (2 * size)) * math.sqrt(2.0 / size)
    c[0] /= math.sqrt(2.0)
    return c


class DCTSubmatrix(DenseCSOperator):
    """An ill-conditioned ``(m, n)`` sub-matrix of a larger orthonormal 1D DCT-II: ``(B, n) -> (B, m)``.

    With ``C`` the orthonormal DCT-II matrix of size ``ambient`` (:func:`dct_matrix`):

    - columns: the contiguous window ``0 .. n-1`` (the signal occupies the first ``n`` samples of a
      longer grid: time limiting);
    - rows: ``m`` distinct frequencies drawn uniformly without replacement (``seed``) from the lowest
      ``band`` frequencies ``0 .. band-1``, sorted ascending (band limiting).

    A time-limited window cannot be resolved from a near-critical set of low frequencies (the
    Slepian concentration problem), so the smallest singular values are small: the default
    ``band = min(ambient, ceil(1.25 * m * ambient / n))`` offers 1.25 times as many candidate
    frequencies as the window's time-bandwidth count ``m`` needs. A larger ``band`` is better
    conditioned (``band = ambient`` draws from all frequencies: cond about 2-10); a smaller one worse.
    The condition number varies with the seed; read it with :meth:`cond`.

    Parameters
    ----------
    m, n : int
        Measurements and unknowns, ``m <= ambient``, ``n <= ambient``.
    seed : int
        Seed of the private generator drawing the rows.
    image_shape : tuple of int, optional
        Image the length-``n`` vector reshapes to; default ``(n,)``.
    ambient : int, optional
        Size of the DCT the sub-matrix comes from; default ``2 * max(m, n)``.
    band : int, optional
        Rows are drawn from the lowest ``band`` frequencies, ``m <= band <= ambient``; default above.
    rcond : float, optional
        Relative singular-value cut-off of :meth:`pinv`; default ``max(m, n) * 2.2e-16``.

    Examples
    --------
    The default case used for MNIST-sized images (28 x 28, 25 % sampling):

    >>> op = DCTSubmatrix(196, 784, seed=0, image_shape=(28, 28))
    >>> op.ambient, op.band
    (1568, 490)
    >>> print(f"{op.cond():.3g}")
    4.21e+05

    Seeds 1-5 of the same case give 942, 356, 4.17e3, 1.06e3 and 1.72e3: the conditioning depends
    on the gaps in the drawn low frequencies. ``DCTSubmatrix(64, 64)`` (square, all rows random) is
    far worse (1e7-1e14), ``DCTSubmatrix(16, 64)`` milder (3-30).
    """

    _FLOAT64_BUFFERS = ("matrix",)

    def __init__(
        self,
        m: int,
        n: int,
        seed: int = 0,
        image_shape: Sequence[int] | int | None = None,
        ambient: int | None = None,
        band: int | None = None,
        rcond: float | None = None,
    ):
        m = _positive_int(m, "m")
        n = _positive_int(n, "n")
        shape = (n,) if image_shape is None else _shape(image_shape, "image_shape")
        if math.prod(shape) != n:
            raise CSArgumentError(f"image_shape {shape} has {math.prod(shape)} pixels but n = {n}")
        ambient = 2 * max(m, n) if ambient is None else _positive_int(ambient, "ambient")
        if ambient < max(m, n):
            raise CSArgumentError(f"ambient = {ambient} must be >= max(m, n) = {max(m, n)}")
        band = min(ambient, math.ceil(1.25 * m * ambient / n)) if band is None else _positive_int(band, "band")
        if not m <= band <= ambient:
            raise CSArgumentError(f"band = {band} must lie in [m, ambient] = [{m}, {ambient}]")
        if rcond is not None and not (isinstance(rcond, (int, float)) and 0 <= rcond < 1):
            raise CSArgumentError(f"rcond must be a float in [0, 1), got {rcond!r}")
        self.seed = _seed(seed)
        self.ambient = ambient
        self.band = band
        self._rcond = None if rcond is None else float(rcond)
        super().__init__(m, n, shape)
        gen = torch.Generator().manual_seed(self.seed)
        rows, _ = torch.sort(torch.randperm(band, generator=gen)[:m])
        self.row_indices = rows.numpy().copy()
        self.column_indices = np.arange(n)
        dense = dct_matrix(ambient)[np.ix_(self.row_indices, self.column_indices)]
        self.register_buffer("matrix", torch.from_numpy(np.ascontiguousarray(dense)), persistent=False)

    def to_config(self) -> dict:
        return {
            "type": "DCTSubmatrix",
            "m": self.m,
            "n": self.n,
            "seed": self.seed,
            "image_shape": list(self.image_shape),
            "ambient": self.ambient,
            "band": self.band,
            "rcond": self._rcond,
        }


class MatrixOperator(DenseCSOperator):
    """Any dense ``(m, n)`` matrix as a ctrobust operator: ``(B, n) -> (B, m)``, same contract as the CS operators.

    For the linear theory and for user-supplied forward models small enough to hold densely.

    Parameters
    ----------
    matrix : array-like or torch.Tensor, shape (m, n)
        Stored once in float64; float32 inputs use a cached float32 copy.
    image_shape : tuple of int, optional
        Image the n-vector reshapes to (row-major); default ``(n,)``.

    Notes
    -----
    ``to_config()`` holds the matrix itself (as nested lists), so checkpoints of models on a
    ``MatrixOperator`` rebuild it exactly; keep such matrices small.

    Examples
    --------
    >>> import torch
    >>> op = MatrixOperator([[2.0, 0.0], [0.0, 0.5]])
    >>> op(torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    tensor([[2.0000, 0.5000]], dtype=torch.float64)
    >>> round(op.cond(), 6)
    4.0
    """

    _FLOAT64_BUFFERS = ("matrix",)

    def __init__(self, matrix, image_shape: Sequence[int] | None = None):
        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().cpu().numpy()
        dense = np.array(matrix, dtype=np.float64)
        if dense.ndim != 2 or 0 in dense.shape:
            raise CSArgumentError(f"matrix must be a non-empty 2-D array (m, n), got shape {dense.shape}")
        if not np.all(np.isfinite(dense)):
            raise CSArgumentError("matrix has NaN or infinite entries")
        m, n = dense.shape
        shape = (n,) if image_shape is None else tuple(int(s) for s in image_shape)
        if math.prod(shape) != n:
            raise CSArgumentError(f"image_shape {shape} has {math.prod(shape)} pixels, the matrix has n = {n} columns")
        super().__init__(m, n, shape)
        self.register_buffer("matrix", torch.from_numpy(dense), persistent=False)

    def to_config(self) -> dict:
        return {"type": "MatrixOperator", "matrix": self.matrix.tolist(), "image_shape": list(self.image_shape)}


_TYPES = {"GaussianCS": GaussianCS, "PartialDCT": PartialDCT, "DCTSubmatrix": DCTSubmatrix,
          "MatrixOperator": MatrixOperator}


def cs_operator_from_config(config: dict) -> CSOperator:
    """Rebuild a CS operator from :meth:`CSOperator.to_config` output (CS types only; any registered
    operator: :func:`ctrobust.operators.base.operator_from_config`)."""
    if not isinstance(config, dict) or config.get("type") not in _TYPES:
        raise CSArgumentError(
            f"not a CS operator description (need 'type' in {sorted(_TYPES)}), got {config!r}"
        )
    return _TYPES[config["type"]].from_config(config)
