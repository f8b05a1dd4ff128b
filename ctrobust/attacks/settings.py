"""The settings of an attack as one value: :class:`AttackSettings`.

Every entry point that attacks takes one ``AttackSettings`` (:func:`~ctrobust.attacks.pga_attack`,
:func:`~ctrobust.attacks.image_space_attack`, :func:`~ctrobust.evaluation.robustness.robustness_curve`,
:func:`~ctrobust.evaluation.robustness.verify_attack`,
:func:`~ctrobust.evaluation.features.evaluate_features`); ``ctrobust attack`` builds it once from its
options (:meth:`ctrobust.app.specs.AttackSpec.attack_settings`), whose defaults are read from this
class, so the command line and Python cannot drift apart. The settings are validated when built, and
recorded in results by :meth:`AttackSettings.to_config`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from ctrobust.attacks.ascent import DEFAULT_STEPS, NORMS, STEP_RULES

__all__ = ["AttackSettings", "ATTACKS", "TARGETS", "NORMS"]

#: the step rules (:data:`ctrobust.attacks.ascent.STEP_RULES`): adaptive APGD, or fixed-step PGA
ATTACKS = tuple(STEP_RULES)
#: what the error is measured against: the truth ``x`` (the robustness metric) or the clean output ``f(y)``
TARGETS = ("truth", "clean")


def _integer(name: str, value, low: int) -> int:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or int(value) != value or value < low):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _flag(name: str, value) -> bool:
    if value not in (True, False):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """How an attack searches the ball (frozen, validated when built; the defaults are the library's).

    Attributes
    ----------
    rule : {"apgd", "pga"}
        The step rule (:data:`ATTACKS`): ``"apgd"``, adaptive step with momentum and checkpoints (Croce &
        Hein 2020), or ``"pga"``, the fixed step ``step_size * r`` of many papers (it stalls below the
        worst case: use it only to compare with them). Recorded as ``"attack"`` by :meth:`to_config`.
    steps : int
        Gradient steps per restart (>= 0), each one forward and one backward pass of ``f``; default 100.
    restarts : int
        Independent runs (>= 1); the worst iterate over all steps and runs is kept per sample.
    step_size : float or None
        ``"apgd"``: the initial step, ``"pga"``: the fixed step, as a fraction of the ball's radius
        (> 0). ``None``: 4 for APGD, ``2.5 / steps`` for PGA.
    norm : {"l2", "linf"}
        The ball: Euclidean (the project's metric) or the box ``max |delta| <= r`` (:data:`NORMS`).
    target : {"truth", "clean"}
        Maximise ``||f(y + delta) - x||^2`` (the robustness metric) or the deviation
        ``||f(y + delta) - f(y)||^2`` (:data:`TARGETS`).
    relative : bool
        ``eps`` is a fraction of each sample's ``||y||`` (default) or an absolute radius in units of ``y``.
    random_start : bool
        Runs without a given start begin at a random point in the ball (default); ``False``: at 0
        (deterministic, but it stalls where the gradient vanishes at 0).
    warm_start : bool
        Along an eps grid (:func:`~ctrobust.evaluation.robustness.robustness_curve`): start each eps's
        first run from the previous eps's worst perturbation, rescaled. A single attack ignores it.
    seed : int
        Seed (>= 0) of the random starts when no generator is given; curves derive every attack's and
        the random reference's generators from it.
    extend : int
        Continuations (>= 0, default 2): a sample whose best run has not converged (its best loss still
        rose by more than 0.5 % over the last fifth of the steps) is continued from its best point by
        another APGD/PGA run of ``max(steps // 2, 10)`` steps (APGD's first step ``r / 2``), at most
        ``extend`` times, while any sample of the batch is still rising. Each continuation is a pass
        over the whole batch, run only when needed; the result can only grow, and ``converged`` then
        judges the last continuation. 0: the budget is exactly ``steps x restarts``.
    """

    rule: str = "apgd"
    steps: int = DEFAULT_STEPS
    restarts: int = 1
    step_size: float | None = None
    norm: str = "l2"
    target: str = "truth"
    relative: bool = True
    random_start: bool = True
    warm_start: bool = False
    seed: int = 0
    extend: int = 2

    def __post_init__(self):
        if self.rule not in ATTACKS:
            raise ValueError(f"rule must be one of {ATTACKS} (adaptive APGD, or fixed-step PGA), got {self.rule!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS} (the l2 ball, or the linf box), got {self.norm!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        fixed = {"steps": _integer("steps", self.steps, 0), "restarts": _integer("restarts", self.restarts, 1),
                 "seed": _integer("seed", self.seed, 0), "extend": _integer("extend", self.extend, 0),
                 "relative": _flag("relative", self.relative),
                 "random_start": _flag("random_start", self.random_start),
                 "warm_start": _flag("warm_start", self.warm_start)}
        if self.step_size is not None:
            if isinstance(self.step_size, bool) or not isinstance(self.step_size, numbers.Real) or not (
                    math.isfinite(self.step_size) and self.step_size > 0):
                raise ValueError(f"step_size must be a positive number (a fraction of the radius) or None, "
                                 f"got {self.step_size!r}")
            fixed["step_size"] = float(self.step_size)
        for name, value in fixed.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes) -> "AttackSettings":
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_config(self) -> dict:
        """JSON-able record for results; the rule is recorded as ``"attack"`` (as result folders always did)."""
        record = dataclasses.asdict(self)
        return {"attack": record.pop("rule"), **record}

    @classmethod
    def from_config(cls, config: dict) -> "AttackSettings":
        """The settings recorded by :meth:`to_config` (keys it lacks take the defaults, except ``extend``: a
        record without it was made before continuations existed, so 0; others are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"rule"}
        values = {"extend": 0, **{k: config[k] for k in names if k in config}}
        if "attack" in config:
            values["rule"] = config["attack"]
        return cls(**values)
