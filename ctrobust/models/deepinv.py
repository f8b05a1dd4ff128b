"""deepinv interop, both ways, without a dependency on deepinv (docs/interop.md).

- :func:`as_physics`: a ctrobust :class:`~ctrobust.operators.base.LinearOperator` as a
  ``deepinv.physics.LinearPhysics``: ``A`` is the operator, ``A_adjoint`` its exact adjoint, ``A_dagger`` its
  own inverse ``operator.pinv`` (FBP with the Ram-Lak filter for the Radon transform, the pseudo-inverse for CS
  operators) instead of deepinv's iterative least-squares solve, so deepinv models and solvers run on
  ctrobust's parallel-beam, fan-beam and CS operators.
- :class:`DeepinvReconstructor`: a deepinv reconstructor ``model(y, physics)`` as an ``f(y)``
  :class:`torch.nn.Module`, which is what ctrobust's attacks (``pga_attack``, ``robustness_curve``), training
  (``fit``) and benchmarks take.

Shapes: deepinv works on images ``(B, C, H, W)``. CT operators already have images ``(B, 1, N, N)`` and
sinograms ``(B, 1, A, D)`` (angles first; deepinv's own ``Tomography`` puts detectors first, which does not
matter here: the physics is ctrobust's). CS operators act on vectors ``(B, n)``; their physics takes images
``(B, 1, *operator.image_shape)`` (row-major reshape) and measurements ``(B, m)``, and
:class:`DeepinvReconstructor` returns ``(B, *operator.domain_shape)`` again.

deepinv is imported only when :func:`as_physics` is called without ``base``. Where it does not import (e.g.
a CUDA torchvision wheel beside a CPU torch), pass any class with deepinv's ``LinearPhysics`` constructor
(``A=``, ``A_adjoint=``, keyword options) as ``base``: the tests use a duck-typed stand-in.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

__all__ = ["as_physics", "DeepinvReconstructor", "deepinv_linear_physics"]


def deepinv_linear_physics():
    """``(deepinv.physics.LinearPhysics, None)``, or ``(None, reason)`` when deepinv does not import."""
    try:
        from deepinv.physics import LinearPhysics
    except Exception as exc:  # ImportError, or e.g. torchvision's RuntimeError on a mismatched wheel
        return None, f"{type(exc).__name__}: {exc}"
    return LinearPhysics, None


def _vector_images(operator) -> bool:
    """Whether ``operator`` acts on vectors whose images are 2-D (CS): the physics then reshapes."""
    return len(operator.domain_shape) == 1 and len(tuple(operator.image_shape)) == 2


@functools.lru_cache(maxsize=None)
def _physics_class(base: type) -> type:
    """The subclass of ``base`` (deepinv's ``LinearPhysics`` or a stand-in) that wraps a ctrobust operator."""

    class CtrobustPhysics(base):
        """A ctrobust operator as deepinv physics: ``A``, ``A_adjoint`` exact, ``A_dagger`` = ``operator.pinv``."""

        def __init__(self, operator, **kwargs):
            super().__init__(A=self._forward_map, A_adjoint=self._adjoint_map, **kwargs)
            self.operator = operator  # a submodule: .to() moves the buffers of CS operators

        def _image(self, x: torch.Tensor) -> torch.Tensor:
            if _vector_images(self.operator):
                return x.reshape(x.shape[0], 1, *self.operator.image_shape)
            return x

        def _domain(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], *self.operator.domain_shape)

        def _forward_map(self, x, **kwargs):
            return self.operator(self._domain(x))

        def _adjoint_map(self, y, **kwargs):
            return self._image(self.operator.adjoint(y))

        def A(self, x, **kwargs):
            """``A x``: images ``(B, 1, N, N)`` (CS: ``(B, 1, *image_shape)``) -> measurements."""
            return self._forward_map(x)

        def A_adjoint(self, y, **kwargs):
            """``A^T y``, the exact adjoint for plain inner products."""
            return self._adjoint_map(y)

        def A_dagger(self, y, **kwargs):
            """``operator.pinv(y)``: FBP (Ram-Lak) for the Radon transform, ``A^+ y`` for CS; deepinv's iterative
            solver when the operator has no ``pinv``."""
            if not self.operator.has_pinv:
                return super().A_dagger(y, **kwargs)
            return self._image(self.operator.pinv(y))

    CtrobustPhysics.__qualname__ = CtrobustPhysics.__name__ = f"CtrobustPhysics[{base.__name__}]"
    return CtrobustPhysics


def as_physics(operator, *, base: type | None = None, **kwargs):
    """``operator`` as a ``deepinv.physics.LinearPhysics`` (an instance of a subclass of ``base``).

    Parameters
    ----------
    operator : LinearOperator
        Any ctrobust operator (parallel / fan beam ``RadonTransform``, CS operators, compositions); kept as the
        physics' submodule ``.operator``.
    base : type, optional
        The class to subclass; default ``deepinv.physics.LinearPhysics`` (imported now). A class with the same
        constructor (``A=``, ``A_adjoint=``, keyword options) works too.
    **kwargs
        Passed to ``base`` (e.g. ``noise_model=deepinv.physics.GaussianNoise(0.01)``).

    Raises ``ImportError`` (with deepinv's own import error) when ``base`` is not given and deepinv does not import.
    """
    from ctrobust.operators.base import LinearOperator

    if not isinstance(operator, LinearOperator):
        raise TypeError(f"as_physics needs a ctrobust LinearOperator, got {type(operator).__name__}")
    if base is None:
        base, reason = deepinv_linear_physics()
        if base is None:
            raise ImportError(f"as_physics needs deepinv (pip install deepinv), which does not import here ({reason}); "
                              "or pass base=<a LinearPhysics-like class>")
    return _physics_class(base)(operator, **kwargs)


class DeepinvReconstructor(nn.Module):
    """A deepinv reconstructor ``model(y, physics)`` as ``f(y)``: measurements ``(B, *operator.range_shape)`` ->
    images ``(B, *operator.domain_shape)``, differentiable in ``y`` and in the model's parameters.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(y, physics)`` (deepinv's convention, e.g. ``deepinv.models.ArtifactRemoval``, unfolded
        or diffusion solvers); its parameters are this module's, so ``fit`` trains them.
    physics : LinearPhysics or LinearOperator
        deepinv physics (with ``.operator`` when made by :func:`as_physics`), or a ctrobust operator, wrapped by
        :func:`as_physics` (``base`` is then passed on).
    base : type, optional
        See :func:`as_physics`.

    ``.operator`` is the ctrobust operator (None for a physics not made by :func:`as_physics`; the output is then
    returned as the model gives it).
    """

    def __init__(self, model: nn.Module, physics, *, base: type | None = None):
        super().__init__()
        from ctrobust.operators.base import LinearOperator

        if not callable(model):
            raise TypeError(f"model must be callable as model(y, physics), got {type(model).__name__}")
        if isinstance(physics, LinearOperator):
            physics = as_physics(physics, base=base)
        if not (hasattr(physics, "A") and hasattr(physics, "A_adjoint")):
            raise TypeError(f"physics must have A and A_adjoint (a deepinv LinearPhysics), got {type(physics).__name__}")
        self.model = model
        self.physics = physics
        self.operator = getattr(physics, "operator", None)

    @property
    def measurement_shape(self) -> tuple[int, ...] | None:
        return None if self.operator is None else tuple(self.operator.range_shape)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = self.model(y, self.physics)
        if self.operator is not None:
            if math.prod(x.shape[1:]) != math.prod(self.operator.domain_shape):
                raise ValueError(f"the deepinv model returned {tuple(x.shape)}, not an image of the operator's "
                                 f"domain {tuple(self.operator.domain_shape)}")
            x = x.reshape(x.shape[0], *self.operator.domain_shape)
        return x
