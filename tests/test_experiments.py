"""The reproduced experiments (experiments/): each runner's --quick path on a reduced config, plus the
exact linear worst case they rely on and the linear theory they reproduce.

Every runner is called in-process through its ``main(argv)`` with ``--set`` overrides that shrink it
further; the assertions check the promised files exist and parse, and real properties of the numbers.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from ctrobust.attacks import AttackSettings, linear_theory as theory
from experiments import _common as C
from experiments.linear_theory.exact import (clean_errors, per_sample_minmax_filter, shared_worst_case_expected,
                                             whitened_samples, worst_case_errors, worst_case_perturbations)


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _png(path):
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


# -- the exact worst case of a linear reconstruction ------------------------------------------------
def test_exact_worst_case_is_the_maximum():
    rng = np.random.default_rng(0)
    n, m, eps = 6, 5, 0.3
    A, B, X = rng.standard_normal((m, n)), rng.standard_normal((n, m)), rng.standard_normal((3, n))
    d = worst_case_perturbations(B, A, X, eps)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), eps, rtol=1e-10)
    value = worst_case_errors(B, A, X, eps)
    # an independent solver (ctrobust.attacks.linear_theory) agrees to rounding
    _, reference = theory.worst_case_perturbation(B, A, eps, X)
    np.testing.assert_allclose(value, reference, rtol=1e-9)
    # no point of the sphere does better (dense random sampling comes within 0.1 %)
    for i in range(3):
        D = rng.standard_normal((100_000, m))
        D *= eps / np.linalg.norm(D, axis=1, keepdims=True)
        r = (B @ A - np.eye(n)) @ X[i]
        sampled = ((r + D @ B.T) ** 2).sum(1).max()
        assert sampled <= value[i] * (1 + 1e-12)
        assert sampled >= value[i] * 0.99


def test_exact_worst_case_hard_and_degenerate_cases():
    A = np.eye(3)
    # r = 0 (exact inverse): the worst case is eps^2 sigma_max^2
    assert worst_case_errors(np.diag([3.0, 1.0, 2.0]), A, np.zeros((1, 3)), 0.5)[0] == pytest.approx(2.25, rel=1e-12)
    # r orthogonal to the top singular vector (the hard case): maximise (1 + 2 d2)^2 + 9 d1^2 on d1^2 + d2^2 = 1/4
    # -> d2 = 0.4, value 3.25 + 1.6 - 0.8 = 4.05
    B = np.diag([3.0, 2.0, 2.0])
    assert worst_case_errors(B, A, np.array([[0.0, 1.0, 0.0]]), 0.5)[0] == pytest.approx(4.05, rel=1e-12)
    # the shared-perturbation expectation is the closed form of ctrobust.attacks.linear_theory
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    assert shared_worst_case_expected(B, A, 0.2) == pytest.approx(theory.worst_case_error(B, A, 0.2), rel=1e-12)


def test_whitened_samples_are_exactly_white():
    X = whitened_samples(300, 7, seed=3)
    np.testing.assert_allclose(X.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(X.T @ X / 300, np.eye(7), atol=1e-12)
    # so the empirical clean error is the population one, ||BA - I||_F^2
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((7, 7)), rng.standard_normal((7, 7))
    assert clean_errors(B, A, X).mean() == pytest.approx(theory.clean_error(B, A), rel=1e-10)


def test_per_sample_optimum_beats_the_shared_closed_form_on_its_own_objective():
    s = np.logspace(0, -2, 8)
    X = whitened_samples(400, 8, seed=4)
    q_closed, _ = theory.minmax_linear_solution(s, 0.05, 1.0)
    q = per_sample_minmax_filter(s, 0.05, 1.0, X, q0=q_closed)

    def objective(q):
        B = np.diag(q)
        return clean_errors(B, np.diag(s), X).mean() + worst_case_errors(B, np.diag(s), X, 0.05).mean()

    assert objective(q) < objective(q_closed) * 0.999
    np.testing.assert_allclose(q[:4], 1 / s[:4], rtol=1e-3)  # large singular values keep the true inverse


# -- the runners ---------------------------------------------------------------------------------
def test_runner_refuses_a_non_empty_out_and_unknown_keys(tmp_path, capsys):
    from experiments.linear_theory.run import main

    (tmp_path / "old.txt").write_text("keep me")
    assert main(["--quick", "--out", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "old.txt").read_text() == "keep me"
    assert main(["--quick", "--out", str(tmp_path / "new"), "--set", "no_such_key=1"]) == 1
    assert "unknown config key" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_runner_options_are_spelt_in_full():
    parser = C.build_parser("linear_theory", "d")
    assert parser.parse_args(["--quick", "--no-progress"]).quick
    for short in (["--qui"], ["--no-prog"]):  # prefixes argparse would otherwise accept
        with pytest.raises(SystemExit):
            parser.parse_args(short)


def test_load_config_quick_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"a": 1, "b": [1, 2], "quick": {"a": 2}}))
    assert C.load_config(path) == {"a": 1, "b": [1, 2], "quick": False}
    assert C.load_config(path, quick=True, overrides=["b=[3]"]) == {"a": 2, "b": [3], "quick": True}
    path.write_text(json.dumps({"a": 1, "quick": {"typo": 2}}))
    with pytest.raises(C.CtrobustError, match="typo"):
        C.load_config(path, quick=True)


@pytest.mark.slow
def test_linear_theory_learns_the_closed_form_filter(tmp_path, global_rng_untouched):
    """The shared-perturbation (universal) trainer lands within 10 % of the closed form in a short run."""
    from experiments.linear_theory.run import main

    out = tmp_path / "lt"
    argv = ["--quick", "--out", str(out), "--threads", "1", "--set", "adversaries=[\"universal\"]",
            "--set", "steps=1000", "--set", "n_test=200", "--set", "pga_samples=16", "--set", "pga_steps=30",
            "--set", "eps_grid=[0.0, 0.05, 0.2]"]
    assert main(argv) == 0
    for name in ("figure.png",):
        _png(out / name)
    summary = _read_csv(out / "summary.csv")
    assert [r["adversary"] for r in summary] == ["universal"]
    row = summary[0]
    assert int(row["k_clipped"]) >= 1
    assert float(row["rel_diff"]) < 0.10, row
    assert float(row["offdiag"]) < 0.10, row
    results = json.loads((out / "results.json").read_text())
    trade = {(r["method"], r["eps"]): r for r in results["tradeoff"]}
    for eps in (0.05, 0.2):
        pinv, filt = trade[("pinv", eps)], trade[("closed_form_matched", eps)]
        # the trade-off of the seed: the true inverse is cleaner, the filtered one far more robust
        assert pinv["clean"] < filt["clean"]
        assert filt["worst_per_sample"] < 0.5 * pinv["worst_per_sample"]
        # PGA never exceeds the exact worst case and comes close to it
        for r in (pinv, filt):
            assert r["pga_max_excess"] <= 1e-6
            assert r["pga_over_exact"] > 0.85
    assert json.loads((out / "config.json").read_text())["experiment"] == "linear_theory"


CS_EXPERIMENTS = ["cs_gaussian", "cs_partial_dct", "cs_dct_submatrix"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CS_EXPERIMENTS)
def test_cs_experiment_quick(tmp_path, name, global_rng_untouched):
    import importlib

    main = importlib.import_module(f"experiments.{name}.run").main
    out = tmp_path / name
    argv = ["--quick", "--out", str(out), "--threads", "1", "--set", "objectives=[\"plain\", \"minmax\"]",
            "--set", "steps=10", "--set", "n_train=128", "--set", "n_val=16", "--set", "attack_samples=8",
            "--set", "attack_steps=5", "--set", "eps_grid=[0.0, 0.05]"]
    assert main(argv) == 0
    for png in ("figure.png", "singular_values.png", "gallery.png"):
        _png(out / png)
    table = json.loads((out / "table.json").read_text())
    csv_rows = _read_csv(out / "table.csv")
    assert len(csv_rows) == len(table)
    for row, csv_row in zip(table, csv_rows):  # the two tables hold the same numbers
        assert np.isfinite(row["sq_error_mean"])
        assert float(csv_row["sq_error_mean"]) == pytest.approx(row["sq_error_mean"], rel=1e-5)  # csv: 6 digits
    methods = {r["method"] for r in table}
    assert methods == {"plain", "minmax", "pinv"}
    for method in methods:
        rows = {(r["eps"], r["condition"]): r for r in table if r["method"] == method}
        assert set(rows) == {(e, c) for e in (0.0, 0.05) for c in ("clean", "random", "attack")}
        # the attack is at least as harmful as Gaussian noise of the same norm
        # (equal for A^+ of the partial DCT: its error is ||r||^2 + ||d||^2 whatever the direction of d)
        assert rows[(0.05, "attack")]["sq_error_mean"] >= rows[(0.05, "random")]["sq_error_mean"] * (1 - 1e-6)
        assert rows[(0.0, "attack")]["sq_error_mean"] == pytest.approx(rows[(0.0, "clean")]["sq_error_mean"])
    results = json.loads((out / "results.json").read_text())
    op = results["operator"]
    assert op["m"] == 32 and op["n"] == 64
    if name == "cs_partial_dct":
        assert op["cond"] == pytest.approx(1.0, abs=1e-9)
    if name == "cs_dct_submatrix":
        assert op["cond"] > 50  # the ill-conditioned case
    # the saved models are trainer-format checkpoints: load_checkpoint rebuilds them with their operator
    from ctrobust.training import load_checkpoint

    model = load_checkpoint(out / "models" / "minmax.pt")
    assert type(model).__name__ == "CSResidualNet" and model.operator.to_config() == op["operator"]


def test_cs_pinv_reference_attack_matches_the_exact_worst_case():
    """The CS experiments' reference line (A^+ y under PGA) reaches the exact trust-region worst case."""
    from ctrobust.attacks import pga_attack
    from ctrobust.operators.cs import DCTSubmatrix

    op = DCTSubmatrix(32, 64, seed=2, image_shape=(8, 8))
    A = op.to_dense().numpy()
    x = torch.from_numpy(np.random.default_rng(0).random((4, 64)))
    y = op(x)
    eps = 0.05
    res = pga_attack(op.pinv, y, x, eps, AttackSettings(relative=True, steps=100, restarts=2),
                     generator=torch.Generator().manual_seed(0))
    radius = res.radius.numpy()
    exact = np.array([worst_case_errors(np.linalg.pinv(A), A, x[i:i + 1].numpy(), radius[i])[0] for i in range(4)])
    pga = res.error.double().numpy()
    assert np.all(pga <= exact * (1 + 1e-6))
    assert np.all(pga >= exact * 0.95)


@pytest.mark.slow
def test_ct_143views_quick(tmp_path):
    from experiments.ct_143views.run import main

    out = tmp_path / "ct"
    argv = ["--quick", "--out", str(out), "--threads", "1", "--set", "objectives=[\"plain\", \"minmax\"]",
            "--set", "max_steps=2", "--set", "n_phantoms=20", "--set", "attack_samples=2", "--set", "attack_steps=2",
            "--set", "device=\"cpu\""]
    assert main(argv) == 0
    _png(out / "figure.png")
    assert (out / "report.md").is_file()
    table = json.loads((out / "table.json").read_text())
    assert {r["model"] for r in table} >= {"plain", "minmax"}
    assert len(_read_csv(out / "table.csv")) == len(table)
    cmds = (out / "commands.txt").read_text().splitlines()
    assert cmds[0].startswith("ctrobust make-phantoms") and cmds[-1].startswith("ctrobust report")
    assert sum(c.startswith("ctrobust train") and "--angles 143" in c for c in cmds) == 2
    for obj in ("plain", "minmax"):
        assert (out / "runs" / obj / "best.pt").is_file()


def test_ct_143views_rejects_missing_data(tmp_path, capsys):
    from experiments.ct_143views.run import main

    assert main(["--quick", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "missing.h5")]) == 1
    assert "prepare-dicom" in capsys.readouterr().err
