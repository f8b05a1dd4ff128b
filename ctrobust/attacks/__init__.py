"""Attacks on reconstructions: the perturbation ball, the step rules, the measurement- and image-space
attacks, exact worst cases, the linear theory.

Modules (imports point down: this package imports :mod:`ctrobust.operators` and the infrastructure only):

- :mod:`~ctrobust.attacks.ball`: the l2 ball (radius, projection) and the random directions / starts;
- :mod:`~ctrobust.attacks.ascent`: projected gradient ascent: the step rules as a name -> step-function
  map (:data:`STEP_RULES`: APGD, PGA), one ascent run, the APGD checkpoints, the convergence check;
- :mod:`~ctrobust.attacks.settings`: :class:`AttackSettings`, the settings of an attack as one frozen,
  validated value (rule, steps, restarts, step size, ball, target, relative eps, starts, seed);
- :mod:`~ctrobust.attacks.measurement`: the measurement-space attack (:func:`pga_attack`, restarts,
  convergence), the per-sample training perturbation of PGD training, the Gaussian reference;
- :mod:`~ctrobust.attacks.image_space`: the image-space attack ``delta = A r`` (:func:`image_space_attack`);
- :mod:`~ctrobust.attacks.worst_case`: exact worst cases of linear maps, Jacobian norms, first-order
  worst cases of networks;
- :mod:`~ctrobust.attacks.linear_theory`: the closed-form min-max solution of linear reconstructions;
- :mod:`~ctrobust.attacks.differentiable`: one forward and backward probe that refuses a reconstruction
  autograd cannot differentiate, with a message that says what to do.

The public names are re-exported here lazily (``from ctrobust.attacks import pga_attack, AttackSettings``).
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

_EXPORTS = {
    **{name: "ctrobust.attacks.ball" for name in (
        "eps_radius", "project_l2_ball", "random_unit_directions", "random_start_in_ball")},
    **{name: "ctrobust.attacks.ascent" for name in (
        "STEP_RULES", "apgd_checkpoints", "DEFAULT_STEPS", "STEP_FACTOR", "CONVERGENCE_TOLERANCE")},
    **{name: "ctrobust.attacks.settings" for name in ("AttackSettings", "ATTACKS", "TARGETS", "NORMS")},
    **{name: "ctrobust.attacks.measurement" for name in (
        "AttackResult", "pga_attack", "random_perturbation", "perturbation_radius", "squared_error", "eval_mode",
        "training_perturbation")},
    **{name: "ctrobust.attacks.image_space" for name in ("image_space_attack",)},
    **{name: "ctrobust.attacks.differentiable" for name in ("NotDifferentiableError", "check_differentiable")},
    **{name: "ctrobust.attacks.worst_case" for name in (
        "WorstCase", "exact_worst_case", "jacobian_norm", "linearized_worst_case", "is_linear")},
}

__all__ = sorted(_EXPORTS)
#: modules reachable as attributes on first use
SUBMODULES = ('ascent', 'ball', 'differentiable', 'image_space', 'linear_theory', 'measurement', 'settings', 'worst_case')
__getattr__ = lazy_getattr(__name__, _EXPORTS, globals(), SUBMODULES)
