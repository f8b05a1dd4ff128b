"""benchmarks/robust_training.py (objective names with lambda, the seed table, the trade-off figure) and
benchmarks/adversary_designs.py (G trained against a frozen f exactly as the trainer trains it)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from ctrobust.models import FBPConvNet
from ctrobust.operators.geometry import ParallelBeam2D
from ctrobust.operators.radon import RadonTransform

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rt():
    return _script("robust_training")


@pytest.fixture(scope="module")
def designs():
    return _script("adversary_designs")


@pytest.mark.parametrize("name, expected", [
    ("plain", ("plain", {}, None)),
    ("minmax", ("minmax", {}, None)),
    ("pgd-lam0.5", ("pgd", {"lam": 0.5}, 0.5)),
    ("minmax-memory", ("minmax", {"adversary_mode": "memory"}, None)),
    ("minmax-memory-lam2", ("minmax", {"adversary_mode": "memory", "lam": 2.0}, 2.0)),
    ("minmax-shared-lam.25", ("minmax", {"adversary_mode": "shared", "lam": 0.25}, 0.25)),
])
def test_objective_names_carry_the_design_and_lambda(rt, name, expected):
    assert rt.parse_objective(name) == expected


def test_a_variant_is_not_changed_by_parsing(rt):
    rt.parse_objective("minmax-conditioned-lam1")
    assert rt.VARIANTS["minmax-conditioned"][1] == {"adversary_mode": "conditioned", "g_lr": 1e-2}


def _rows():
    return [{"objective": "plain", "family": "plain", "lam": None, "seed": 0, "seconds_per_step": 0.1, "eps 0": 0.03, "eps 0.01": 0.12},
            {"objective": "plain", "family": "plain", "lam": None, "seed": 1, "seconds_per_step": 0.3, "eps 0": 0.05, "eps 0.01": 0.14},
            {"objective": "minmax-memory-lam0.5", "family": "minmax-memory", "lam": 0.5, "seed": 0, "seconds_per_step": 0.2,
             "g_efficiency": 0.8, "g_cosine": 0.1, "eps 0": 0.035, "eps 0.01": 0.09},
            {"objective": "minmax-memory-lam1", "family": "minmax-memory", "lam": 1.0, "seed": 0, "seconds_per_step": 0.2,
             "g_efficiency": 0.9, "g_cosine": 0.05, "eps 0": 0.04, "eps 0.01": 0.085}]


def test_table_is_the_mean_and_std_over_seeds(rt):
    lines = rt.table(_rows()).splitlines()
    assert lines[0].split()[:3] == ["objective", "clean", "eps"]
    plain = lines[1].split()
    # mean and population std of (0.03, 0.05) and (0.12, 0.14); median s/step 0.2; 2 seeds; no adversary
    assert plain[:7] == ["plain", "0.0400", "+-", "0.0100", "0.1300", "+-", "0.0100"]
    assert plain[7:] == ["0.200", "2", "nan", "nan"]
    assert lines[2].split()[-2:] == ["0.80", "0.10"]


def test_tradeoff_figure_is_written_from_jsonl_rows(rt, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    png = tmp_path / "tradeoff.png"
    assert rt.main(["--table", str(rows), "--figure", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "4 rows from" in capsys.readouterr().out


def _frozen(op):
    f = FBPConvNet(op, channels=4, depth=2, seed=0)
    with torch.no_grad():  # a non-trivial residual so that worst cases differ between samples
        for p in f.parameters():
            if p.dim() == 4 and p.shape[0] == 1:
                torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(4))
    return f


def test_designs_train_g_against_a_frozen_f(designs):
    op = RadonTransform(ParallelBeam2D(32, 30))
    result = {}
    for mode in ("shared", "memory"):
        f = _frozen(op)
        before = [p.detach().clone() for p in f.parameters()]
        result[mode] = designs.measure(f, mode, 60, n_train=16, n_eval=8)
        for a, b in zip(before, f.parameters()):  # f is frozen: never stepped, batch-norm statistics kept
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for a, b in zip(f.buffers(), _frozen(op).buffers()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert result["shared"]["g_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert result["memory"]["eval_samples_visited"] == 8  # 60 batches of 8 from 16 samples visit all
    assert result["memory"]["g_cosine"] < 0.5
    assert result["memory"]["g_efficiency"] > result["shared"]["g_efficiency"]
