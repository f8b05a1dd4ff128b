"""Defaults in one place (issue 20): every command default that stands for a library default equals it.

The drift this catches: ``ctrobust train --objective universal`` took 1 ascent step (a TrainSpec literal passed on
as ``g_steps``) while ``Universal()`` takes 3. The links below say which library parameter each spec field stands
for; :func:`ctrobust.app.spec.library_default_mismatches` compares them (reusable for any spec).
"""

from __future__ import annotations

import dataclasses

import pytest

from ctrobust.app.spec import Library, library_default_mismatches, option
from ctrobust.app.specs import OBJECTIVE_FIELDS, DemoSpec, EvaluateSpec, TrainSpec

OBJ = "ctrobust.training.objectives:"
FIT = "ctrobust.training.trainer:fit"
FBPCONVNET = "ctrobust.models.fbpconvnet:FBPConvNet"
ROBUSTNESS = "ctrobust.evaluation.robustness:robustness_curve"
PERTURBED = [OBJ + c for c in ("MinMax", "PGD", "Universal", "Jitter")]

TRAIN_LINKS = {
    "data_seed": ("ctrobust.data:load_split", "seed"),
    "backend": ("ctrobust.operators.radon:RadonTransform", "backend"),
    **{name: FBPCONVNET for name in ("filter", "channels", "depth", "norm")},
    "eps": PERTURBED,
    "adversary_mode": (OBJ + "MinMax", "mode"),
    "u_step": OBJ + "MinMax", "g_lr": OBJ + "MinMax", "g_steps": OBJ + "MinMax",
    "pgd_steps": (OBJ + "PGD", "steps"),
    "universal_steps": (OBJ + "Universal", "steps"),
    "mu": OBJ + "WeightDecay",
    "beta": OBJ + "Parseval",
    **{name: FIT for name in ("batch_size", "lr", "scheduler", "seed", "num_workers", "log_every")},
}
EVALUATE_LINKS = {
    "n_samples": (ROBUSTNESS, "max_samples"),
    "batch_size": ROBUSTNESS,
    "seed": "ctrobust.evaluation.shift:make_shift",
}
DEMO_LINKS = {
    "eps": (OBJ + "MinMax", "eps"),  # the demo's min-max run trains at this radius
    # attack_steps: 200, twice the attack's default on purpose (100 left the demo's networks unconverged)
    "seed": FIT,
}


@pytest.mark.parametrize("spec_cls, links", [(TrainSpec, TRAIN_LINKS), (EvaluateSpec, EVALUATE_LINKS),
                                             (DemoSpec, DEMO_LINKS)], ids=["train", "evaluate", "demo"])
def test_every_spec_default_equals_its_library_default(spec_cls, links):
    assert library_default_mismatches(spec_cls, links) == []


def test_the_helper_reports_a_drifted_literal():
    """The original drift, planted: a literal 1 for the universal objective's ascent steps."""
    drifted = dataclasses.make_dataclass("Drifted", [("universal_steps", int, option(1))], bases=(TrainSpec,),
                                         frozen=True)
    (line,) = library_default_mismatches(drifted, {"universal_steps": (OBJ + "Universal", "steps")})
    assert "Drifted.universal_steps = 1" in line and "steps=3" in line


def test_every_objective_option_field_is_linked_and_absolute_is_relative_negated():
    keyword_of = {name: kw for name, (_, kw) in OBJECTIVE_FIELDS.items()}
    linked = {n for n, t in TRAIN_LINKS.items() if n in OBJECTIVE_FIELDS}
    assert linked == set(OBJECTIVE_FIELDS) - {"lam", "absolute"}  # lam: None = each class's own default
    for name in linked:
        target = TRAIN_LINKS[name]
        params = {t[1] if isinstance(t, tuple) else name for t in (target if isinstance(target, list) else [target])}
        assert params == {keyword_of[name]}, name
    assert TrainSpec.default("absolute") is (not Library(OBJ + "PGD", "relative").resolve())


@pytest.mark.parametrize("objective", ["plain", "weight-decay", "parseval", "minmax", "pgd", "universal", "jitter"])
def test_the_default_train_command_builds_each_objective_with_its_class_defaults(objective):
    from ctrobust.training.objectives import OBJECTIVES, build_objective

    built = build_objective(objective, **TrainSpec(objective=objective).objective_options())
    assert built.to_config() == OBJECTIVES[objective]().to_config()


def test_the_default_train_command_builds_fbpconvnet_with_its_class_defaults():
    from ctrobust.models import FBPConvNet, build_model
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.operators.radon import RadonTransform

    op = RadonTransform(ParallelBeam2D(16, 8))
    assert build_model(TrainSpec().model_config(), op).to_config() == FBPConvNet(op).to_config()


@pytest.mark.parametrize("spec_cls", [TrainSpec, EvaluateSpec, DemoSpec])
def test_every_library_default_of_a_spec_resolves(spec_cls):
    """A renamed library parameter fails here, not in a user's --help."""
    for f in dataclasses.fields(spec_cls):
        spec_cls.default(f.name)
        if f.metadata.get("library_default") is not None:
            f.metadata["library_default"]()
        spec_cls.choices(f.name)
