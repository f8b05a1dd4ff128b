"""The application layer and the command line built from it (issue 13, part B)."""

import argparse
import ast
import dataclasses
import math
import re
from pathlib import Path

import pytest

from ctrobust.app import AttackSpec, DemoSpec, EvaluateSpec, ReportSpec, ResultFolder, TrainSpec
from ctrobust.cli import COMMANDS, build_parser, main
from ctrobust.cli.adapter import spec_from_args
from ctrobust.errors import CtrobustError

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMAND_MODULES = {f"ctrobust.cli.{c.replace('-', '_')}" for c in COMMANDS}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("module", sorted(SUBCOMMAND_MODULES))
def test_no_subcommand_module_imports_another_or_the_trainer(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    imported = _imports(path)
    assert not (imported & (SUBCOMMAND_MODULES - {module})), imported & SUBCOMMAND_MODULES
    assert not any(name.startswith("ctrobust.training.trainer") for name in imported)


@pytest.mark.parametrize("path", sorted([*ROOT.glob("ctrobust/app/*.py"), *ROOT.glob("experiments/*/run.py"),
                                         ROOT / "experiments" / "_cs.py"]), ids=lambda p: str(p.relative_to(ROOT)))
def test_app_demo_and_experiments_do_not_go_through_the_command_line(path):
    assert not any(name == "ctrobust.cli" or name.startswith("ctrobust.cli.") for name in _imports(path))


def test_bad_choice_is_refused_at_parse_time_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--filter", "bogus", "--out", str(out), "--max-steps", "1"])
    assert exc.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(CtrobustError, match="--filter 'bogus'"):
        TrainSpec(filter="bogus", out=str(out))
    with pytest.raises(CtrobustError, match="positive integer"):
        AttackSpec(steps=3, restarts=0)
    assert not out.exists()


def test_a_contradiction_is_refused_before_the_old_run_is_touched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_text("an earlier run")
    assert main(["train", "--resume", "--force", "--out", str(out)]) == 1
    assert (out / "last.pt").read_text() == "an earlier run"


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices[command].format_help().split())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_each_default_once_and_switches_truthfully(command):
    text = _help(command)
    for chunk in re.split(r"\s(?=--?[a-z])", text):
        assert chunk.count("(default:") <= 1, chunk
    assert "(default: True)" not in text and "(default: None)" not in text


def test_switches_are_boolean_optional_and_their_defaults_are_the_specs():
    text = _help("train")
    assert "--progress, --no-progress" in text and "--absolute, --no-absolute" in text
    assert re.search(r"--no-progress progress bar \(only on a terminal\) \(default: on\)", text)
    args = build_parser().parse_args(["train", "--no-progress", "--objective", "pgd", "--absolute"])
    spec = spec_from_args(TrainSpec, args)
    assert spec == TrainSpec(progress=False, objective="pgd", absolute=True)


@pytest.mark.parametrize("spec_cls, command, argv", [
    (TrainSpec, "train", []), (AttackSpec, "attack", []), (EvaluateSpec, "evaluate", []), (DemoSpec, "demo", []),
    (ReportSpec, "report", ["some/folder"]),
])
def test_the_parser_defaults_are_the_spec_defaults(spec_cls, command, argv):
    spec = spec_from_args(spec_cls, build_parser().parse_args([command, *argv]))
    expected = {f.name: spec_cls.default(f.name) for f in dataclasses.fields(spec_cls)}
    got = dataclasses.asdict(spec)
    if command == "report":
        expected["results"] = ("some/folder",)
        got["results"] = tuple(got["results"])
    assert got == expected


def test_one_flag_name_per_concept_and_old_spellings_still_work():
    parse = build_parser().parse_args
    for command in ("train", "attack", "evaluate", "demo"):
        text = _help(command)
        assert "--size" in text and "--angles" in text and "--image-size" not in text and "--n-angles" not in text
    old = spec_from_args(AttackSpec, parse(["attack", "--image-size", "24", "--n-angles", "8", "--no-fbp"]))
    new = spec_from_args(AttackSpec, parse(["attack", "--size", "24", "--angles", "8", "--no-fbp"]))
    assert old == new and (new.size, new.angles, new.fbp) == (24, 8, False)
    ev = spec_from_args(EvaluateSpec, parse(["evaluate", "--small-features", "--eps", "0.01,0.02"]))
    assert ev.eps_grid == (0.01, 0.02)
    demo = spec_from_args(DemoSpec, parse(["demo", "--steps", "7", "--n-test", "3"]))
    assert (demo.max_steps, demo.n_samples) == (7, 3)


def test_lead_flags_survive_with_their_help():
    attack, train = _help("attack"), _help("train")
    for flag in ("--attack {apgd,pga}", "--no-warm-start", "--no-linearization", "--verify N", "--verify-steps",
                 "--verify-restarts"):
        assert flag in attack, flag
    assert "Croce & Hein 2020" in attack and "Jacobian norm" in attack
    from ctrobust.models.adversary import MODES

    assert "--adversary-mode {" + ",".join(MODES) + "}" in train and "--u-step" in train  # choices from the library
    spec = spec_from_args(AttackSpec, build_parser().parse_args(
        ["attack", "--attack", "pga", "--no-warm-start", "--no-linearization", "--verify", "2"]))
    assert (spec.attack, spec.warm_start, spec.linearization, spec.verify) == ("pga", False, False, 2)


def test_spec_argv_round_trips_through_the_parser():
    spec = AttackSpec(checkpoint=("a.pt", "b.pt"), eps_grid=(0.0, 0.01), steps=7, progress=False, size=24)
    assert spec_from_args(AttackSpec, build_parser().parse_args(["attack", *spec.argv()])) == spec


def test_result_folder_refuses_a_non_empty_folder_and_writes_one_summary_schema(tmp_path):
    out = tmp_path / "res"
    folder = ResultFolder(out).check()
    assert not out.exists()
    folder.create().write_summary("attack", {"eps_grid": [0, 0.01]}, [{"label": "FBP"}], [{"model": "FBP", "n": 1}])
    import json

    record = json.loads((out / "summary.json").read_text())
    assert list(record)[:5] == ["command", "ctrobust_version", "config", "models", "summary"]
    assert folder.written == ["summary.json"]
    with pytest.raises(CtrobustError, match="not empty.*force=True"):  # the library speaks keywords
        ResultFolder(out).check()
    ResultFolder(out, force=True).check()


def test_mean_std_is_the_population_statistic():
    from ctrobust.evaluation.metrics import mean_std

    assert mean_std("e", [1.0, 2.0, 3.0, 4.0]) == {"e_mean": 2.5, "e_std": math.sqrt(1.25)}
    nan = mean_std("e", [1.0, float("nan"), 3.0], ignore_nan=True)
    assert nan == {"e_mean": 2.0, "e_std": 1.0}


def test_version_and_help_of_the_parser_import_no_torch():
    """``ctrobust --version`` answers without importing torch; ``train --help`` reads the library's defaults."""
    import subprocess
    import sys

    code = ("import sys; from ctrobust.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().endswith("[]"), res.stdout
    text = _help("train")  # help formatted now: the defaults come from the classes' signatures
    assert re.search(r"--universal-steps UNIVERSAL_STEPS universal: .*\(default: 3\)", text)
    assert "--objective {plain,weight-decay,parseval,minmax,pgd,universal,jitter}" in text


def test_train_refuses_options_of_another_objective_or_model():
    with pytest.raises(CtrobustError, match=r"--g-steps does not apply to --objective universal.*--universal-steps"):
        TrainSpec(objective="universal", g_steps=2)
    with pytest.raises(CtrobustError, match="--channels only apply to --model fbpconvnet"):
        TrainSpec(model="mypkg.nets:make_net", channels=8)
    with pytest.raises(CtrobustError, match="give FBPConvNet's depth with --depth"):
        TrainSpec(model_option=("depth=2",))
    spec = spec_from_args(TrainSpec, build_parser().parse_args(
        ["train", "--model", "mypkg.nets:make_net", "--model-option", "width=8", "--model-option", "widths=[1, 2]",
         "--model-option", "name=abc"]))
    assert spec.model_config() == {"type": "mypkg.nets:make_net", "width": 8, "widths": [1, 2], "name": "abc"}
    assert TrainSpec(channels=8).model_config() == {"type": "fbpconvnet", "channels": 8, "depth": 4,
                                                    "filter": "ram-lak", "norm": "batch"}
    for bad in (["--model", "not a name"], ["--model-option", "noequals"]):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["train", *bad])
        assert exc.value.code == 2


@pytest.mark.parametrize("argv", [["attack", "--restart", "5"], ["benchmark", "--verify-s", "300"],
                                  ["train", "--max-step", "10"]])
def test_shortened_options_are_usage_errors(argv, capsys):
    # argparse would take a unique prefix as the option: a typo would then silently set another option
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
