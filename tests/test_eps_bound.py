"""A relative eps above 0.5 (50 % of ||y||_2) is a usage error on the command line (exit 2, the message names
the percent/fraction slip) unless --allow-large-eps or --absolute; the library takes any finite eps >= 0."""

import pytest

from ctrobust.attacks import AttackSettings

from ctrobust.app import spec as S
from ctrobust.app.specs import AttackSpec, DemoSpec, EvaluateSpec, TrainSpec
from ctrobust.cli import main


@pytest.mark.parametrize("argv", [
    ["attack", "--method", "fbp", "--eps", "1.5"],
    ["attack", "--method", "fbp", "--eps-grid", "0,0.01,2"],
    ["train", "--objective", "minmax", "--eps", "1.5"],
    ["demo", "--eps-grid", "0,0.01,1"],
    ["evaluate", "--method", "fbp", "--small-features", "--eps-grid", "0,5"],
])
def test_large_relative_eps_is_a_usage_error(argv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "% of each sample's ||y||_2" in err and "fraction, not a percent" in err and "--allow-large-eps" in err
    assert "allow_large_eps" not in err  # the command line speaks flags
    assert not out.exists()  # refused before anything is written


def test_the_bound_and_its_ways_out():
    S.check_radii(AttackSpec(method=("fbp",), eps=S.MAX_RELATIVE_EPS))  # the bound itself passes
    with pytest.raises(S.LargeEpsError, match=r"--eps 0\.6 is 60 % .*for 0\.6 % give 0\.006") as info:
        AttackSpec(method=("fbp",), eps=0.6)
    assert info.value.exit_code == 2
    assert AttackSpec(method=("fbp",), eps=1.5, allow_large_eps=True).eps == 1.5
    assert AttackSpec(method=("fbp",), eps_grid=(0.0, 3.0), absolute=True).eps_grid == (0.0, 3.0)  # sinogram units
    assert TrainSpec(objective="minmax", eps=2.0, absolute=True).eps == 2.0
    with pytest.raises(S.LargeEpsError, match="--eps-grid 2 is 200 %"):
        DemoSpec(eps_grid=(0.0, 2.0))
    assert DemoSpec(eps_grid=(0.0, 2.0), allow_large_eps=True).eps_grid == (0.0, 2.0)
    with pytest.raises(S.LargeEpsError):
        EvaluateSpec(method=("fbp",), small_features=True, eps_grid=(0.0, 0.7))


def test_demo_passes_the_permission_to_its_stages():
    from ctrobust.app.demo import demo_stages, real_slice_stage

    spec = DemoSpec(eps=0.8, eps_grid=(0.0, 0.8), allow_large_eps=True)
    stages = demo_stages(spec)  # building the stage specs would raise without it
    assert stages[1].eps == 0.8 and stages[2].eps_grid == (0.0, 0.8) and real_slice_stage(spec).eps == 0.8


def test_the_library_refuses_only_nonsense():
    import torch

    from ctrobust.evaluation.robustness import robustness_curve
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.operators.radon import RadonTransform

    op = RadonTransform(ParallelBeam2D(16, 8))
    data = [torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))]
    for bad in (-0.01, float("nan")):
        with pytest.raises(ValueError, match="finite numbers >= 0"):
            robustness_curve(op.fbp, data, op, [0.0, bad], AttackSettings(steps=1), progress=False)
    result = robustness_curve(op.fbp, data, op, [0.0, 1.5], AttackSettings(steps=1), progress=False)
    assert {r["eps"] for r in result.summary} == {0.0, 1.5}  # a large radius is the caller's choice in Python
