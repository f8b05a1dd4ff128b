"""Attacks on reconstructions: the perturbation ball, the sinogram-space attack, exact worst cases, the
linear theory.

Modules (imports point down: this package imports :mod:`ctrobust.operators` and the infrastructure only):

- :mod:`~ctrobust.attacks.ball`: the l2 ball (radius, projection) and the random directions / starts;
- :mod:`~ctrobust.attacks.measurement`: the measurement-space attack (:func:`pga_attack`: APGD or PGA,
  restarts, convergence), the per-sample training perturbation of PGD training, the Gaussian reference
  and the image-space attack;
- :mod:`~ctrobust.attacks.worst_case`: exact worst cases of linear maps, Jacobian norms, first-order
  worst cases of networks;
- :mod:`~ctrobust.attacks.linear_theory`: the closed-form min-max solution of linear reconstructions;
- :mod:`~ctrobust.attacks.differentiable`: one forward and backward probe that refuses a reconstruction
  autograd cannot differentiate, with a message that says what to do.

The public names are re-exported here lazily (``from ctrobust.attacks import pga_attack``).
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

_EXPORTS = {
    **{name: "ctrobust.attacks.ball" for name in (
        "eps_radius", "project_l2_ball", "random_unit_directions", "random_start_in_ball")},
    **{name: "ctrobust.attacks.measurement" for name in (
        "AttackResult", "pga_attack", "image_space_attack", "random_perturbation", "perturbation_radius",
        "squared_error", "eval_mode", "apgd_checkpoints", "training_perturbation", "ATTACKS", "TARGETS", "NORMS",
        "DEFAULT_STEPS", "STEP_FACTOR", "CONVERGENCE_TOLERANCE")},
    **{name: "ctrobust.attacks.differentiable" for name in ("NotDifferentiableError", "check_differentiable")},
    **{name: "ctrobust.attacks.worst_case" for name in (
        "WorstCase", "exact_worst_case", "jacobian_norm", "linearized_worst_case", "is_linear")},
}

__all__ = sorted(_EXPORTS)
#: modules reachable as attributes on first use
SUBMODULES = ('ball', 'differentiable', 'linear_theory', 'measurement', 'worst_case')
__getattr__ = lazy_getattr(__name__, _EXPORTS, globals(), SUBMODULES)
