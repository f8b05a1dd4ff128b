"""``ctrobust benchmark``: the leaderboard files parse, its attacked errors are ``ctrobust attack``'s, a second run
adds a row without retraining, an interrupted run resumes, and a folder of another protocol is refused.

One tiny benchmark (32 px, 4 training steps, 2 test samples, FBP and one trained FBPConvNet, a 3-step attack)
is run once per module; tests that change a folder work on a copy.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import re
import shutil
from pathlib import Path

import pytest

from ctrobust.app import benchmark as bm
from ctrobust.cli import main
from ctrobust.evaluation import leaderboard as lb

PROTOCOL = next(iter(bm._protocols()))
TINY = ["--protocol", PROTOCOL, "--quick", "--size", "32", "--steps", "4", "--n-samples", "2", "--channels", "4",
        "--depth", "2", "--no-progress"]
MODELS = ["--models", "fbp,fbpconvnet-plain"]


@pytest.fixture(scope="module")
def tiny_budget():
    """A 3-step attack and a 3 x 1 verification instead of --quick's (the test is about bookkeeping)."""
    mp = pytest.MonkeyPatch()
    mp.setitem(bm.QUICK, "attack", {"attack": "apgd", "steps": 3, "restarts": 2, "verify": 1, "verify_steps": 3,
                                     "verify_restarts": 1})
    yield
    mp.undo()


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_budget):
    """A finished tiny benchmark folder (do not change it: copy it)."""
    out = tmp_path_factory.mktemp("bench") / "b"
    assert main(["benchmark", *TINY, *MODELS, "--out", str(out)]) == 0
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(src, dst)  # copy2: modification times are kept
    return dst


def _mtimes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_leaderboard_files_exist_and_parse(bench):
    for name in lb.LEADERBOARD_FILES + ("robustness_curves.png", bm.STATE_FILE):
        assert (bench / name).is_file(), name
    with open(bench / "leaderboard.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["model"] for r in rows) == ["fbp", "fbpconvnet-plain"]
    data = json.loads((bench / "leaderboard.json").read_text())
    state = json.loads((bench / bm.STATE_FILE).read_text())
    assert data["protocol"] == PROTOCOL and data["fingerprint"] == state["fingerprint"]
    assert data["verified"] is False and "quick" in data["not_verified_reason"]
    assert set(data["models"]) == {"fbp", "fbpconvnet-plain"}
    for name in data["models"]:  # each attack result names the protocol it was measured under
        attack = json.loads((bench / "attack" / name / "summary.json").read_text())["config"]
        assert attack["protocol"] == {"name": PROTOCOL, "fingerprint": state["fingerprint"], "size": 32}
    for row in data["rows"]:
        for col in ("clean_relative_error", "clean_psnr", "clean_ssim", "attack_relative_error@0.04",
                    "verify_ratio", "restart_spread", "attack_s"):
            assert isinstance(row[col], float), (row["model"], col)
        assert row["fingerprint"] == state["fingerprint"]
        # the attacked error grows with eps and exceeds the clean one
        attacked = [row[lb.attack_column(e)] for e in data["eps_grid"] if e > 0]
        assert attacked == sorted(attacked) and attacked[0] >= row["clean_relative_error"]
    by_model = {r["model"]: r for r in data["rows"]}
    assert by_model["fbpconvnet-plain"]["train_steps"] == 4 and by_model["fbp"]["train_steps"] is None
    assert isinstance(by_model["fbp"]["jacobian_norm"], float)
    assert by_model["fbp"]["dose_relative_error"] is not None  # the protocol has a dose: f on the noisy y
    html = (bench / "leaderboard.html").read_text()
    assert html.count("<tr>") == 3 and html.count("data:image/png;base64,") == 3  # curves + 2 galleries


def test_markdown_leaderboard_renders_as_a_table(bench):
    markdown_it = pytest.importorskip("markdown_it")
    data = json.loads((bench / "leaderboard.json").read_text())
    tokens = markdown_it.MarkdownIt().enable("table").parse((bench / "leaderboard.md").read_text())
    assert sum(t.type == "tr_open" for t in tokens) == 1 + len(data["rows"])
    assert sum(t.type == "th_open" for t in tokens) == len(data["columns"])
    assert sum(t.type == "td_open" for t in tokens) == len(data["columns"]) * len(data["rows"])


def test_markdown_cells_escape_pipes():
    markdown_it = pytest.importorskip("markdown_it")
    rows = [{"model": "a|b", "kind": "x\ny", "clean_relative_error": 0.5}, {"model": "c\\|", "kind": "z"}]
    cols = ["model", "kind", "clean_relative_error"]
    rendered = markdown_it.MarkdownIt().enable("table").render(lb.markdown_table(rows, cols))
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", rendered)]
    assert cells == ["a|b", "x y", "0.5", "c\\|", "z", ""]


def test_model_row_reads_the_summary():
    summary = [
        {"eps": 0.0, "condition": "clean", "relative_error_mean": 0.1, "psnr_mean": 30.0, "ssim_mean": 0.9,
         "jacobian_norm_mean": 2.5},
        {"eps": 0.0, "condition": "dose", "relative_error_mean": 0.12},
        {"eps": 0.01, "condition": "random", "relative_error_mean": 0.11},
        {"eps": 0.01, "condition": "attack", "relative_error_mean": 0.2, "restart_spread_mean": 0.03},
        {"eps": 0.02, "condition": "attack", "relative_error_mean": 0.3, "restart_spread_mean": 0.01},
    ]
    verification = [{"eps": 0.01, "ratio_mean": 0.99}, {"eps": 0.02, "ratio_mean": 0.95}]
    row = lb.model_row("m", summary, [0.0, 0.01, 0.02], verification)
    assert row == {"model": "m", "clean_relative_error": 0.1, "clean_psnr": 30.0, "clean_ssim": 0.9,
                   "dose_relative_error": 0.12, "attack_relative_error@0.01": 0.2, "attack_relative_error@0.02": 0.3,
                   "verify_ratio": 0.95, "restart_spread": 0.03, "jacobian_norm": 2.5}
    ranked = lb.rank_rows([{"model": "a", lb.attack_column(0.02): 0.3}, {"model": "b", lb.attack_column(0.02): 0.2},
                           {"model": "c"}], 0.02)
    assert [(r["rank"], r["model"]) for r in ranked] == [(1, "b"), (2, "a"), (3, "c")]


def test_attacked_errors_equal_ctrobust_attack(bench, tmp_path, tiny_budget):
    data = json.loads((bench / "leaderboard.json").read_text())
    for name, record in data["models"].items():
        argv = list(record["attack_argv"])
        argv[argv.index("--out") + 1] = str(tmp_path / name)
        assert main(argv) == 0
        summary = json.loads((tmp_path / name / "summary.json").read_text())["summary"]
        row = next(r for r in data["rows"] if r["model"] == name)
        for eps in (e for e in data["eps_grid"] if e > 0):
            ours = next(s for s in summary if s["condition"] == "attack" and s["eps"] == eps)
            assert row[lb.attack_column(eps)] == ours["relative_error_mean"], (name, eps)
        clean = next(s for s in summary if s["condition"] == "clean")
        assert row["clean_relative_error"] == clean["relative_error_mean"]


def _user_checkpoint(bench: Path, tmp_path: Path) -> Path:
    """A user's model trained with the protocol's geometry (train_argv of the benchmark's own, other seed)."""
    record = json.loads((bench / "models" / "fbpconvnet-plain.json").read_text())
    argv = list(record["train_argv"])
    argv[argv.index("--out") + 1] = str(tmp_path / "mylab")
    argv += ["--seed", "7", "--no-resume"]
    assert main(argv) == 0
    return tmp_path / "mylab" / "best.pt"


def test_second_run_with_checkpoint_adds_a_row_without_retraining(bench, tmp_path, tiny_budget):
    out = _copy(bench, tmp_path)
    ckpt = _user_checkpoint(bench, tmp_path)
    before = _mtimes(out)
    assert main(["benchmark", *TINY, *MODELS, "--checkpoint", f"mynet={ckpt}", "--out", str(out)]) == 0
    after = _mtimes(out)
    for name in ("train/fbpconvnet-plain/last.pt", "train/fbpconvnet-plain/best.pt", "models/fbp.json",
                 "models/fbpconvnet-plain.json", "attack/fbp/summary.json"):
        assert after[name] == before[name], f"{name} was rewritten"
    data = json.loads((out / "leaderboard.json").read_text())
    assert sorted(r["model"] for r in data["rows"]) == ["fbp", "fbpconvnet-plain", "mynet"]
    mine = data["models"]["mynet"]
    assert mine["kind"] == "checkpoint" and mine["source"] == str(ckpt) and len(mine["sha256"]) == 64
    assert next(r for r in data["rows"] if r["model"] == "mynet")["train_steps"] == 4
    # the same label from another file is refused, nothing changes
    other = tmp_path / "mylab" / "last.pt"
    before = _mtimes(out)
    assert main(["benchmark", *TINY, *MODELS, "--checkpoint", f"mynet={other}", "--out", str(out)]) == 1
    assert _mtimes(out) == before


def test_interrupted_run_resumes(tmp_path, tiny_budget, capsys):
    out = tmp_path / "b"
    # a run killed during training: the trainer had saved step 2 of 4; and a run killed during an attack
    spec = bm.BenchmarkSpec(protocol=PROTOCOL, quick=True, size=32, steps=4, n_samples=2, channels=4, depth=2,
                            models=("fbp", "fbpconvnet-plain"), out=str(out), progress=False)
    plan = bm.protocol_plan(spec)
    bm._open_folder(out, plan)
    train, _ = bm.model_specs(spec, plan, out, "fbpconvnet-plain")
    from ctrobust.app.train import run_train

    run_train(train.replace(max_steps=2))
    first = (out / "train" / "fbpconvnet-plain" / "steps.jsonl").read_text().splitlines()
    (out / "attack" / "fbp").mkdir(parents=True)
    (out / "attack" / "fbp" / "samples.csv").write_text("partial")
    # the subset first, then the full set: the subset's rows are reused
    assert main(["benchmark", *TINY, "--models", "fbp", "--out", str(out)]) == 0
    assert (out / "attack" / "fbp" / "summary.json").exists()
    fbp_record = (out / "models" / "fbp.json").stat().st_mtime_ns
    assert main(["benchmark", *TINY, *MODELS, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "fbp: done (reused)" in err and "resuming" in err
    steps = (out / "train" / "fbpconvnet-plain" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 4 and steps[:2] == first  # continued from step 2, not restarted
    assert (out / "models" / "fbp.json").stat().st_mtime_ns == fbp_record
    assert len(json.loads((out / "leaderboard.json").read_text())["rows"]) == 2


def test_other_protocol_fingerprint_or_settings_refused(bench, tmp_path, tiny_budget, capsys):
    out = _copy(bench, tmp_path)
    before = _mtimes(out)
    assert main(["benchmark", *[a if a != "32" else "40" for a in TINY], *MODELS, "--out", str(out)]) == 1
    assert "fingerprint" in capsys.readouterr().err
    assert main(["benchmark", *[a if a != "4" else "5" for a in TINY], *MODELS, "--out", str(out)]) == 1
    assert "train_steps: 4 there, 5 now" in capsys.readouterr().err
    assert _mtimes(out) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["benchmark", *TINY, *MODELS, "--out", str(other)]) == 1
    assert "not a benchmark folder" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]


def test_list_and_bad_options(capsys):
    assert main(["benchmark", "--list"]) == 0
    assert PROTOCOL in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--protocol", PROTOCOL, "--models", "fbp,unet-nosuch"])
    assert exc.value.code == 2
    assert main(["benchmark", "--models", "fbp"]) == 1
    assert "--protocol" in capsys.readouterr().err
    assert main(["benchmark", "--protocol", "no-such-protocol", "--out", "unused"]) == 1
    assert "unknown protocol" in capsys.readouterr().err


def test_help_states_units_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps at hyphens too
    assert "unit:pixels" in text and "default:fbp,fbp-hann,tv,fbpconvnet-plain,fbpconvnet-minmax,fbpconvnet-pgd" in text
    assert "(default:1500;300with--quick)" in text


def test_protocol_option_gives_train_and_attack_the_protocols_scan_and_noise():
    from ctrobust.app import AttackSpec, TrainSpec
    from ctrobust.app.acquisition import build_geometry
    from ctrobust.app.inputs import noise_model
    from ctrobust.errors import CtrobustError
    from ctrobust.operators.radon import RadonTransform

    geometry = build_geometry(TrainSpec(protocol="raj2020", size=32), 32, 0)
    # raj2020: 725 bins at 512 px -> round(725 * 32 / 512) = 45 at 32 px (ctrobust's default would be 46)
    assert (geometry.image_size, geometry.n_angles, geometry.n_detectors) == (32, 143, 45)
    noise = noise_model(AttackSpec(protocol="raj2020", size=32), RadonTransform(geometry))
    # I0 = 4096 on LoDoPaB's scale over 260 mm: mu = 81.35858 / m * 0.26 m / 32 px per pixel
    assert noise.photons == 4096 and noise.mu == pytest.approx(81.35858 * 0.26 / 32, rel=1e-12)
    with pytest.raises(CtrobustError, match="drop --photons"):
        noise_model(AttackSpec(protocol="raj2020", size=32, photons=1000.0), RadonTransform(geometry))
    with pytest.raises(CtrobustError, match="drop --angles"):
        build_geometry(TrainSpec(protocol="raj2020", size=32, angles=60), 32, 60)
    with pytest.raises(CtrobustError, match="unknown"):
        build_geometry(TrainSpec(protocol="nosuch", size=32), 32, 0)


def test_checkpoint_of_another_geometry_is_refused(bench, tmp_path, tiny_budget, capsys):
    out = _copy(bench, tmp_path)
    assert main(["train", "--size", "32", "--angles", "143", "--max-steps", "1", "--channels", "4", "--depth", "2",
                 "--n-train", "8", "--n-val", "2", "--no-progress", "--out", str(tmp_path / "other")]) == 0
    before = _mtimes(out)
    assert main(["benchmark", *TINY, *MODELS, "--checkpoint", str(tmp_path / "other" / "best.pt"),
                 "--out", str(out)]) == 1
    assert "is not the protocol's" in capsys.readouterr().err
    assert _mtimes(out) == before


def test_training_cost_from_the_step_log(tmp_path):
    rows = [{"step": s, "seconds": t} for s, t in ((1, 0.5), (2, 0.25), (3, 0.75))]
    (tmp_path / "steps.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert bm.training_cost(tmp_path) == {"train_steps": 3, "train_s_per_step": 0.5, "train_total_s": 1.5}
    # a log of every 10th step of a 30-step run: the checkpoint's step count, the mean per logged step
    assert bm.training_cost(tmp_path, 30) == {"train_steps": 30, "train_s_per_step": 0.5, "train_total_s": 15.0}
    assert bm.training_cost(tmp_path / "none")["train_steps"] is None


def test_an_architecture_train_cannot_build_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["benchmark", *TINY, "--models", "fbp,nosuchnet-plain", "--out", str(out)]) == 1
    assert "nosuchnet" in capsys.readouterr().err
    assert not out.exists()


def test_attack_budget_flags_override_the_protocol_and_a_weaker_one_is_named():
    from ctrobust.app.specs import BenchmarkSpec
    from ctrobust.evaluation.protocols import PROTOCOLS

    budget = PROTOCOLS[PROTOCOL].attack
    full = bm.protocol_plan(BenchmarkSpec(protocol=PROTOCOL, size=32))
    assert full.attack["steps"] == budget.steps and full.attack["verify"] == budget.verify
    assert "attack budget" not in (full.record["not_verified_reason"] or "")
    weak = bm.protocol_plan(BenchmarkSpec(protocol=PROTOCOL, size=32, attack_steps=budget.steps - 1,
                                          verify=0, verify_restarts=budget.verify_restarts + 1))
    assert (weak.attack["steps"], weak.attack["verify"], weak.attack["verify_restarts"]) == (
        budget.steps - 1, 0, budget.verify_restarts + 1)
    assert not weak.verified
    reason = weak.record["not_verified_reason"]
    assert f"--attack-steps {budget.steps - 1} < {budget.steps}" in reason and f"--verify 0 < {budget.verify}" in reason
    assert "--verify-restarts" not in reason  # stronger than the protocol's: not a reason
    assert weak.settings() != full.settings()  # a folder of one budget refuses the other
    stronger = bm.protocol_plan(BenchmarkSpec(protocol=PROTOCOL, size=32, attack_steps=budget.steps + 100))
    assert stronger.attack["steps"] == budget.steps + 100
    assert "attack budget" not in (stronger.record["not_verified_reason"] or "")


def test_fbp_hann_is_a_classical_row_attacked_with_the_hann_filter(tmp_path):
    from ctrobust.app.specs import BenchmarkSpec

    spec = BenchmarkSpec(protocol=PROTOCOL, size=32, quick=True, models=("fbp", "fbp-hann"), out=str(tmp_path))
    plan = bm.protocol_plan(spec)
    train, attack = bm.model_specs(spec, plan, tmp_path, "fbp-hann")
    assert train is None and attack.method == ("fbp",) and attack.method_option == ("fbp.filter=hann",)
    argv = attack.argv()
    assert argv[argv.index("--method-option") + 1] == "fbp.filter=hann"  # what models/fbp-hann.json records
    _, plain = bm.model_specs(spec, plan, tmp_path, "fbp")
    assert plain.method == ("fbp",) and plain.method_option == ()
    from ctrobust.app.specs import model_names

    assert model_names("fbp,fbp-hann,tv") == ("fbp", "fbp-hann", "tv")


def test_extend_is_part_of_the_budget_and_an_older_folder_without_it_continues(bench, tmp_path, tiny_budget, capsys):
    from ctrobust.app.specs import AttackSpec, BenchmarkSpec
    from ctrobust.attacks.settings import AttackSettings

    default = bm.protocol_plan(BenchmarkSpec(protocol=PROTOCOL, size=32))
    assert default.attack["extend"] == AttackSettings().extend  # ctrobust attack's own default
    none = bm.protocol_plan(BenchmarkSpec(protocol=PROTOCOL, size=32, extend=0))
    assert none.attack["extend"] == 0 and none.settings() != default.settings()
    spec = BenchmarkSpec(protocol=PROTOCOL, size=32, extend=0, out=str(tmp_path))
    _, attack = bm.model_specs(spec, bm.protocol_plan(spec), tmp_path, "fbp")
    assert isinstance(attack, AttackSpec) and attack.extend == 0  # reaches the attack
    out = _copy(bench, tmp_path)
    assert main(["benchmark", *TINY, *MODELS, "--extend", "1", "--out", str(out)]) == 1
    assert "extend" in capsys.readouterr().err  # the folder ran with the default: another budget
    state = json.loads((out / bm.STATE_FILE).read_text())
    del state["settings"]["attack"]["extend"]  # as written before the benchmark recorded --extend
    (out / bm.STATE_FILE).write_text(json.dumps(state))
    assert main(["benchmark", *TINY, *MODELS, "--extend", "1", "--out", str(out)]) == 0
    assert json.loads((out / "leaderboard.json").read_text())["attack"]["extend"] == 1
    assert main(["benchmark", *TINY, *MODELS, "--extend", "0", "--out", str(out)]) == 1  # the first value is kept
    assert "extend" in capsys.readouterr().err
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    assert f"(default: {AttackSettings().extend}, as ctrobust attack)" in " ".join(capsys.readouterr().out.split())
    head = (out / "leaderboard.md").read_text()
    assert "up to 1 continuation(s) per eps" in head and "verification 3 steps x 1 restarts on 1 sample(s)" in head


def test_tv_weight_is_chosen_on_validation_at_the_dose_and_reused(tmp_path, monkeypatch, capsys):
    import torch

    from ctrobust.app import inputs
    from ctrobust.app.specs import BenchmarkSpec
    from ctrobust.reconstruction import classical

    spec = BenchmarkSpec(protocol=PROTOCOL, size=32, quick=True, models=("tv",), out=str(tmp_path))
    plan = bm.protocol_plan(spec)
    _, attack = bm.model_specs(spec, plan, tmp_path, "tv")
    attack = attack.replace(method_option=("tv.iterations=20",))
    seen = {}
    real = classical.select_tv_weight

    def spy(operator, y, x, **kw):
        seen.update(y=y, x=x, **kw)
        return real(operator, y, x, **kw)

    monkeypatch.setattr(classical, "select_tv_weight", spy)
    record = bm._tune_tv(attack, plan, tmp_path, "tv", lambda text: None)
    assert seen["iterations"] == 20  # the attacked reconstruction's iterations, not the library default
    x, y = seen["x"], seen["y"]
    assert x.shape[0] == inputs.TV_TUNING_IMAGES
    from ctrobust.app.acquisition import build_geometry
    from ctrobust.operators.radon import RadonTransform

    clean = RadonTransform(build_geometry(attack, 32, 0))(x)
    rel = float((y - clean).norm() / clean.norm())
    assert 0.005 < rel < 0.2  # measured with the protocol's noise, not noise-free
    assert record["errors"][repr(record["tau"])] == min(record["errors"].values())
    saved = json.loads((tmp_path / "tuning" / "tv.json").read_text())
    assert saved["tau"] == record["tau"] and saved["fingerprint"] == plan.fingerprint

    def boom(*a, **k):
        raise AssertionError("tuned again")

    monkeypatch.setattr(classical, "select_tv_weight", boom)
    assert bm._tune_tv(attack, plan, tmp_path, "tv", lambda text: None)["tau"] == record["tau"]
    other = dataclasses.replace(plan, seed=plan.seed + 1)
    with pytest.raises(AssertionError, match="tuned again"):  # another seed: another noise draw, tuned anew
        bm._tune_tv(attack, other, tmp_path, "tv", lambda text: None)


def test_tv_row_is_attacked_with_the_chosen_weight(tmp_path, tiny_budget):
    out = tmp_path / "b"
    assert main(["benchmark", *TINY, "--models", "tv", "--out", str(out)]) == 0
    tau = json.loads((out / "tuning" / "tv.json").read_text())["tau"]
    record = json.loads((out / "models" / "tv.json").read_text())
    argv = record["attack_argv"]
    assert argv[argv.index("--method-option") + 1] == f"tv.tau={tau!r}"  # ctrobust attack with it reproduces the row
    assert record["tuning"]["tau"] == tau
    assert record["source"] == f"method:tv (tau={tau!r})"  # the row says which TV it is
    summary = json.loads((out / "attack" / "tv" / "summary.json").read_text())
    assert summary["config"]["method_options"]["tv"]["tau"] == tau != 0.3  # not the library default


def test_leaderboard_head_says_no_verification_and_no_continuations():
    meta = {"protocol": "p", "fingerprint": "f", "size": 32, "n_samples": 2, "seed": 0, "rank_eps": 0.04,
            "attack": {"attack": "apgd", "steps": 100, "restarts": 2, "verify": 0, "verify_steps": 300,
                       "verify_restarts": 5, "extend": 0}}
    text = lb.markdown_page([], ["model"], meta)
    assert "no verification" in text and "300 steps x 5" not in text and "no continuations" in text
