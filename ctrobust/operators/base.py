"""The one contract every ctrobust operator follows.

A :class:`LinearOperator` maps batches ``(B, *domain_shape) -> (B, *range_shape)``. Subclasses implement
two methods on already-validated tensors, ``_matvec`` and ``_rmatvec``; the base class adds
input checks with clear errors, a torch autograd rule (the gradient of ``A`` is ``A^T`` and vice
versa, so attacks and training differentiate through any operator), composition, the adjoint
operator ``A.T``, a power-iteration norm and the adjoint dot test.

Inner products are the plain (unweighted) sums over pixels / bins / vector entries, so
``<A x, y> == <x, A.T y>`` exactly up to floating-point rounding.

The vocabulary every operator shares (models, attacks and checkpoints use only these names):

- ``A(x)`` / ``A.adjoint(y)`` / ``A.T``: the map, its exact adjoint, the adjoint as an operator;
- ``A.pinv(y)``: the operator's own (approximate) inverse, ``range -> domain``: filtered
  backprojection with the default filter for :class:`~ctrobust.operators.radon.RadonTransform`, the
  Moore-Penrose pseudo-inverse for the CS operators (operators without one raise ``NotImplementedError``;
  ``A.has_pinv`` tells);
- ``A.image_shape``: the image a domain element reshapes to (row-major, no channel axis), e.g.
  ``(N, N)`` for CT, ``(28, 28)`` for a CS operator on vectorised 28 x 28 images;
- ``A.to_config()`` / :func:`operator_from_config`: a JSON-able description and its inverse, through a
  registry of operator types (:func:`register_operator`); checkpoints store operators this way.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["LinearOperator", "ComposedOperator", "AdjointOperator", "check_batch", "register_operator",
           "operator_from_config", "OPERATOR_TYPES"]

_FLOAT_DTYPES = (torch.float32, torch.float64)


def check_batch(t: torch.Tensor, shape: Sequence[int], what: str, *, name: str = "operator") -> None:
    """Raise a clear error unless ``t`` is a float32/float64 tensor shaped ``(B, *shape)``, B >= 1."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: {what} must be float32 or float64, got {t.dtype}")
    expected = (None, *shape)
    if t.dim() != len(expected) or tuple(t.shape[1:]) != tuple(shape) or t.shape[0] < 1:
        shown = ", ".join("B" if s is None else str(s) for s in expected)
        raise ValueError(f"{name}: {what} must have shape ({shown}), got {tuple(t.shape)}")


class _LinearFunction(torch.autograd.Function):
    """``x -> A x`` (or ``A^T x``) whose backward is the other map; differentiable any number of times."""

    @staticmethod
    def forward(ctx, x, op, transpose):  # type: ignore[override]
        ctx.op = op
        ctx.transpose = transpose
        return op._rmatvec(x) if transpose else op._matvec(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        op = ctx.op
        # Calling the public methods keeps double backward (e.g. gradient penalties) exact as well.
        g = op.forward(grad) if ctx.transpose else op.adjoint(grad)
        return g, None, None


class LinearOperator(nn.Module):
    """A linear map ``A`` on batches, with its exact adjoint.

    Shapes: ``forward`` takes ``(B, *domain_shape)`` and returns ``(B, *range_shape)``;
    ``adjoint`` the reverse. Both accept float32 and float64 (output dtype = input dtype), any batch
    size B >= 1, and non-contiguous input. A wrong shape, dtype or device raises, never broadcasts.

    Subclasses set ``domain_shape`` / ``range_shape`` by calling ``super().__init__`` and implement
    ``_matvec(x)`` and ``_rmatvec(y)`` for validated, contiguous tensors. They may override
    ``_check_device(t)`` to refuse devices they cannot serve.
    """

    def __init__(self, domain_shape: Sequence[int], range_shape: Sequence[int]):
        super().__init__()
        self.domain_shape = tuple(int(s) for s in domain_shape)
        self.range_shape = tuple(int(s) for s in range_shape)
        # The image a domain element reshapes to: the domain without a leading channel axis of size 1
        # (``(1, N, N) -> (N, N)``); subclasses with vectorised images set their own.
        d = self.domain_shape
        self.image_shape = d[1:] if len(d) == 3 and d[0] == 1 else d

    # -- to implement (names as in scipy.sparse.linalg.LinearOperator; ``_apply`` belongs to nn.Module) --
    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for a validated, contiguous ``(B, *domain_shape)`` tensor."""
        raise NotImplementedError

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` for a validated, contiguous ``(B, *range_shape)`` tensor."""
        raise NotImplementedError

    def _check_device(self, t: torch.Tensor) -> None:
        """Hook: raise if this operator cannot work on ``t.device``."""

    # -- public API ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: ``(B, *domain_shape) -> (B, *range_shape)``."""
        check_batch(x, self.domain_shape, "input", name=self.name)
        self._check_device(x)
        return _LinearFunction.apply(x.contiguous(), self, False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``: ``(B, *range_shape) -> (B, *domain_shape)``, the exact adjoint for plain inner products."""
        check_batch(y, self.range_shape, "adjoint input", name=self.name)
        self._check_device(y)
        return _LinearFunction.apply(y.contiguous(), self, True)

    @property
    def T(self) -> "LinearOperator":
        """The adjoint as an operator, ``A.T(y) == A.adjoint(y)``."""
        return AdjointOperator(self)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """The operator's inverse ``range -> domain`` (FBP for the Radon transform, ``A^+`` for CS operators).

        The base class has none and raises ``NotImplementedError``; see :attr:`has_pinv`.
        """
        raise NotImplementedError(f"{self.name} has no pinv() (no pseudo-inverse or filtered backprojection)")

    @property
    def has_pinv(self) -> bool:
        """Whether :meth:`pinv` is implemented (overridden by the operator's class)."""
        return type(self).pinv is not LinearOperator.pinv

    # -- configuration --------------------------------------------------------------------------------
    def to_config(self) -> dict:
        """A JSON-able description ``{"type": name, ...}``; :func:`operator_from_config` rebuilds the operator.

        The base class raises ``NotImplementedError`` (a custom operator that cannot be rebuilt; its
        checkpoints load with ``load_checkpoint(path, operator=...)``).
        """
        raise NotImplementedError(f"{self.name} has no to_config(); it cannot be rebuilt from a description")

    @classmethod
    def from_config(cls, config: dict) -> "LinearOperator":
        """Inverse of :meth:`to_config` (default: the description's entries as keyword arguments)."""
        return cls(**{k: v for k, v in config.items() if k != "type"})

    @classmethod
    def shapes_from_config(cls, config: dict) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """``(domain_shape, range_shape)`` implied by a description without building the operator (None: unknown)."""
        return None

    def __matmul__(self, other: "LinearOperator") -> "LinearOperator":
        """``A @ B`` is the composition ``x -> A(B(x))``."""
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return ComposedOperator(self, other)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^T A x``."""
        return self.adjoint(self.forward(x))

    @torch.no_grad()
    def norm(self, iterations: int = 50, *, dtype=torch.float64, device=None, seed: int = 0) -> float:
        """Operator 2-norm (largest singular value) estimated by power iteration on ``A^T A``.

        Uses its own ``torch.Generator`` (``seed``), so the global RNG is untouched.
        """
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((1, *self.domain_shape), generator=gen, dtype=dtype).to(device or "cpu")
        x /= x.norm()
        value = 0.0
        for _ in range(iterations):
            z = self.normal(x)
            value = float(z.norm())
            if value == 0.0:
                return 0.0
            x = z / value
        return math.sqrt(value)

    @torch.no_grad()
    def dot_test(self, *, batch: int = 2, dtype=torch.float64, device=None, seed: int = 0) -> float:
        """Relative adjoint mismatch ``|<A x, y> - <x, A^T y>| / |<A x, y>|`` on random x, y."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((batch, *self.domain_shape), generator=gen, dtype=dtype).to(device or "cpu")
        y = torch.randn((batch, *self.range_shape), generator=gen, dtype=dtype).to(device or "cpu")
        lhs = torch.sum(self.forward(x).double() * y.double())
        rhs = torch.sum(x.double() * self.adjoint(y).double())
        return float((lhs - rhs).abs() / lhs.abs())

    def extra_repr(self) -> str:
        return f"domain_shape={self.domain_shape}, range_shape={self.range_shape}"


#: Operator type name -> class, or ``"module:Class"`` imported on first use (keeps imports cheap).
OPERATOR_TYPES: dict[str, Any] = {
    "RadonTransform": "ctrobust.operators.radon:RadonTransform",
    "FanBackprojection": "ctrobust.operators.fanbeam:FanBackprojection",
    "GaussianCS": "ctrobust.operators.cs:GaussianCS",
    "PartialDCT": "ctrobust.operators.cs:PartialDCT",
    "DCTSubmatrix": "ctrobust.operators.cs:DCTSubmatrix",
    "MatrixOperator": "ctrobust.operators.cs:MatrixOperator",
    "AdjointOperator": "ctrobust.operators.base:AdjointOperator",
    "ComposedOperator": "ctrobust.operators.base:ComposedOperator",
}


def register_operator(name: str, cls, *, overwrite: bool = False) -> None:
    """Make ``operator_from_config({"type": name, ...})`` build ``cls`` (a LinearOperator subclass or
    ``"module:Class"``); ``cls.to_config()`` must return ``{"type": name, ...}``."""
    if name in OPERATOR_TYPES and not overwrite:
        raise ValueError(f"operator type {name!r} is already registered (pass overwrite=True to replace it)")
    OPERATOR_TYPES[name] = cls


def operator_class(name: str):
    """The class registered under ``name`` (``KeyError`` if none)."""
    cls = OPERATOR_TYPES[name]
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        OPERATOR_TYPES[name] = cls
    return cls


def operator_from_config(config: dict) -> LinearOperator:
    """Rebuild an operator from :meth:`LinearOperator.to_config` output (``ValueError`` for an unknown type)."""
    kind = config.get("type") if isinstance(config, dict) else None
    if kind not in OPERATOR_TYPES:
        raise ValueError(f"not an operator description (need 'type' in {sorted(OPERATOR_TYPES)}), got {config!r}")
    return operator_class(kind).from_config(config)


class AdjointOperator(LinearOperator):
    """``A^T`` as an operator in its own right; its adjoint is ``A`` again."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.range_shape, op.domain_shape)
        self.op = op

    @property
    def name(self) -> str:
        return f"{self.op.name}.T"

    def _check_device(self, t):
        self.op._check_device(t)

    def _matvec(self, x):
        return self.op._rmatvec(x)

    def _rmatvec(self, y):
        return self.op._matvec(y)

    @property
    def T(self) -> LinearOperator:
        return self.op

    def to_config(self) -> dict:
        return {"type": "AdjointOperator", "operator": self.op.to_config()}

    @classmethod
    def from_config(cls, config: dict) -> "AdjointOperator":
        return cls(operator_from_config(config["operator"]))


class ComposedOperator(LinearOperator):
    """``A @ B``: ``x -> A(B(x))``; its adjoint is ``B^T(A^T(y))`` (reversed order)."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator):
        if tuple(outer.domain_shape) != tuple(inner.range_shape):
            raise ValueError(
                f"cannot compose {outer.name} (domain {outer.domain_shape}) "
                f"with {inner.name} (range {inner.range_shape})"
            )
        super().__init__(inner.domain_shape, outer.range_shape)
        self.outer = outer
        self.inner = inner

    @property
    def name(self) -> str:
        return f"({self.outer.name} @ {self.inner.name})"

    def _check_device(self, t):
        self.inner._check_device(t)
        self.outer._check_device(t)

    def _matvec(self, x):
        return self.outer._matvec(self.inner._matvec(x).contiguous())

    def _rmatvec(self, y):
        return self.inner._rmatvec(self.outer._rmatvec(y).contiguous())

    def to_config(self) -> dict:
        return {"type": "ComposedOperator", "outer": self.outer.to_config(), "inner": self.inner.to_config()}

    @classmethod
    def from_config(cls, config: dict) -> "ComposedOperator":
        return cls(operator_from_config(config["outer"]), operator_from_config(config["inner"]))
