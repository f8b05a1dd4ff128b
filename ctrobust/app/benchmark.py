"""``run_benchmark``: train what is missing, attack every model under a named protocol, write the leaderboard
(``ctrobust benchmark``).

A benchmark folder ``out`` holds::

    benchmark.json          the protocol (name, fingerprint, card) at the run's size and the run's settings
    train/<model>/          ctrobust train's run folder of each trained model (config.json, last.pt, best.pt, logs)
    attack/<model>/         ctrobust attack's result folder of each model (summary.json, gallery.png, ...)
    models/<model>.json     the model's record, written when its attack is complete (source, train and attack
                            commands, costs); a model counts as done only when this file exists
    leaderboard.{csv,json,md,html}, robustness_curves.png

Resuming: a training folder whose ``last.pt`` holds the planned number of steps and a ``best.pt`` is reused; an
incomplete one continues with the trainer's resume; an attack folder without its model record is attacked
again. A later run on the same folder (same protocol fingerprint and settings, else refused) adds rows, e.g. a
user's ``--checkpoint``, without touching the finished ones. Only :func:`protocol_plan` reads the protocol.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

from ctrobust.app.specs import BENCHMARK_NETWORK as FULL_NETWORK
from ctrobust.app.specs import BENCHMARK_QUICK as QUICK
from ctrobust.app.specs import BENCHMARK_TRAIN_STEPS as TRAIN_STEPS
from ctrobust.app.specs import BENCHMARK_METHODS as _METHODS
from ctrobust.app.specs import AttackSpec, BenchmarkSpec, TrainSpec
from ctrobust.errors import CtrobustError

__all__ = ["run_benchmark", "BenchmarkResult", "Plan", "protocol_plan", "list_protocols", "STATE_FILE",
           "QUICK", "model_specs"]

STATE_FILE = "benchmark.json"


# -- the protocol, read in one place --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """What a benchmark run does, derived from a protocol at one size and the spec: the fields of the train and
    attack specs, the budgets, and the record every result carries."""

    protocol: str
    fingerprint: str
    card: str
    size: int
    eps_grid: tuple
    attack: dict  # AttackSpec fields: attack, steps, restarts, verify, verify_steps, verify_restarts, target, extend
    verified: bool
    train_steps: int
    n_samples: int
    network: dict  # channels, depth
    seed: int
    record: dict  # protocol name, fingerprint, geometry, dose, data, ... for the results

    def settings(self) -> dict:
        """The settings a benchmark folder is tied to (besides the fingerprint)."""
        return {"size": self.size, "train_steps": self.train_steps, "n_samples": self.n_samples,
                "attack": dict(self.attack), "eps_grid": list(self.eps_grid), "network": dict(self.network),
                "seed": self.seed, "verified": self.verified}


def _protocols() -> dict:
    """Name -> protocol (:data:`ctrobust.evaluation.protocols.PROTOCOLS`)."""
    from ctrobust.evaluation.protocols import PROTOCOLS

    return dict(PROTOCOLS)


def list_protocols() -> list[tuple[str, str]]:
    """``(name, one line)`` of every protocol, as ``ctrobust benchmark --list`` prints them."""
    return [(name, p.summary().split(": ", 1)[-1]) for name, p in _protocols().items()]


#: the data every benchmark trains and tests on for now: the built-in phantoms (their test split)
PHANTOM_DATA = "built-in random-ellipse phantoms (train 256 / val 32 / test 32, data seed 0)"
PHANTOM_TEST = 32


#: each field of the protocol's attack budget -> the BenchmarkSpec field (``--attack-steps``, ...) that overrides it
_BUDGET_FIELDS = {"steps": "attack_steps", "restarts": "restarts", "verify": "verify", "verify_steps": "verify_steps",
                  "verify_restarts": "verify_restarts"}


def _default_extend() -> int:
    """``ctrobust attack``'s continuations when --extend is not given (the attack settings' default)."""
    from ctrobust.attacks.settings import AttackSettings

    return AttackSettings().extend


def protocol_plan(spec: BenchmarkSpec) -> Plan:
    """The plan of ``spec``: its protocol at ``--size`` (the only function that reads a protocol's fields)."""
    protocols = _protocols()
    if spec.protocol not in protocols:
        raise CtrobustError(f"unknown protocol {spec.protocol!r}; choose one of {', '.join(protocols)} "
                            "(ctrobust benchmark --list)")
    base = protocols[spec.protocol]
    size = spec.size or (QUICK["size"] if spec.quick else base.scan.image_size)
    p = base.at_size(size)
    quick = spec.quick
    b = p.attack
    attack = {**QUICK["attack"], "target": b.target} if quick else {
        "attack": b.rule, "steps": b.steps, "restarts": b.restarts, "verify": b.verify,
        "verify_steps": b.verify_steps, "verify_restarts": b.verify_restarts, "target": b.target}
    network = {"channels": spec.channels or (QUICK["channels"] if quick else FULL_NETWORK["channels"]),
               "depth": spec.depth if spec.depth is not None else (QUICK["depth"] if quick else FULL_NETWORK["depth"])}
    train_steps = spec.steps or (QUICK["train_steps"] if quick else TRAIN_STEPS)
    n_test = PHANTOM_TEST if p.data.dataset != "phantoms" or p.data.test is None else min(p.data.test, PHANTOM_TEST)
    n_samples = min(spec.n_samples or (QUICK["n_samples"] if quick else n_test), PHANTOM_TEST)
    reasons = []
    if quick:
        reasons.append("--quick: an attack budget below the protocol's verified one, short training, few samples")
    weaker = []
    for key, field in _BUDGET_FIELDS.items():
        value = getattr(spec, field)
        if value is None:
            continue
        attack[key] = value
        if value < getattr(b, key):
            weaker.append(f"--{field.replace('_', '-')} {value} < {getattr(b, key)}")
    attack["extend"] = spec.extend if spec.extend is not None else _default_extend()
    if weaker and not quick:
        reasons.append(f"an attack budget below the protocol's verified one ({', '.join(weaker)})")
    if spec.steps is not None and spec.steps < TRAIN_STEPS:
        reasons.append(f"--steps {spec.steps}: shorter training than the benchmark's {TRAIN_STEPS} steps")
    if not quick and n_samples < n_test:
        reasons.append(f"--n-samples {n_samples}: fewer test samples than the {n_test} of the test split")
    if p.data.dataset != "phantoms":
        reasons.append(f"built-in phantoms instead of the protocol's data ({p.data.dataset})")
    g = p.geometry()
    record = {"protocol": p.name, "fingerprint": p.fingerprint(), "base_fingerprint": base.fingerprint(),
              "title": p.title, "size": size, "geometry": g.to_config(),
              "geometry_text": f"{p.scan.beam} beam, {p.scan.n_views} views, {p.scan.n_bins} bins, "
                               f"{size} x {size} px of {p.scan.pixel_mm:.4g} mm",
              "dose": None if p.noise is None else p.noise.to_config(),
              "dose_text": "noise-free" if p.noise is None else p.noise.describe(),
              "data": PHANTOM_DATA, "protocol_data": dataclasses.asdict(p.data),
              "not_verified_reason": "; ".join(reasons) or None}
    return Plan(protocol=p.name, fingerprint=p.fingerprint(), card=p.card(), size=size, eps_grid=tuple(p.eps_grid),
                attack=attack, verified=not reasons, train_steps=train_steps, n_samples=n_samples, network=network,
                seed=spec.seed, record=record)


# -- models ---------------------------------------------------------------------------------------------
def _arch_objective(name: str) -> tuple[str, str]:
    arch, _, objective = name.rpartition("-")
    return arch, objective


def _arch_fields(arch: str) -> dict:
    """The TrainSpec fields that select architecture ``arch`` (``fbpconvnet`` is train's default model)."""
    names = {f.name for f in dataclasses.fields(TrainSpec)}
    if "model" in names:
        from ctrobust.models.registry import resolve_model

        try:  # importable before anything is trained (a registered name whose module is absent fails here)
            resolve_model(arch)
        except (CtrobustError, ValueError, ImportError) as exc:
            raise CtrobustError(f"--models: architecture {arch!r}: {exc}") from None
        return {"model": arch}
    if arch == "fbpconvnet":
        return {}
    raise CtrobustError(f"--models: architecture {arch!r} is not trainable in this build (ctrobust train trains "
                        "fbpconvnet only); drop it or bring it as --checkpoint")


def model_specs(spec: BenchmarkSpec, plan: Plan, out: Path, name: str) -> tuple[TrainSpec | None, AttackSpec]:
    """The train spec (None for a method) and the attack spec of model ``name`` of ``--models``: both take the
    geometry and the noise from ``--protocol`` at ``--size``, so ``ctrobust train`` / ``ctrobust attack`` with
    their argument lists (recorded in ``models/<model>.json``) do exactly the same."""
    common = dict(protocol=plan.protocol, size=plan.size, seed=plan.seed, device=spec.device, progress=spec.progress)
    attack = dict(eps_grid=plan.eps_grid, n_samples=plan.n_samples, out=str(out / "attack" / name), fbp=False,
                  linearization=True, **plan.attack, **common)
    if name in _METHODS:
        method, options = _METHODS[name]
        return None, AttackSpec(method=(method,), method_option=options, **attack)
    arch, objective = _arch_objective(name)
    run = out / "train" / name
    train = TrainSpec(objective=objective, max_steps=plan.train_steps, batch_size=spec.batch_size, out=str(run),
                      save_every=max(10, plan.train_steps // 20),
                      **(plan.network if arch == "fbpconvnet" else {}), **_arch_fields(arch),
                      **common)
    return train, AttackSpec(checkpoint=(str(run / "best.pt"),), **attack)


def _user_checkpoints(spec: BenchmarkSpec) -> list[tuple[str, Path]]:
    """``(label, path)`` of each ``--checkpoint [LABEL=]PATH`` (label: the run folder's name by default)."""
    out = []
    for text in spec.checkpoint:
        label, sep, path = text.partition("=")
        if not sep:
            label, path = "", text
        path = Path(path)
        label = label or path.parent.name or path.stem
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", label):
            raise CtrobustError(f"--checkpoint {text}: the label {label!r} must be letters, digits and . _ + - "
                                "(give one as LABEL=PATH)")
        if label in spec.models or label in [l for l, _ in out]:
            raise CtrobustError(f"--checkpoint {text}: the label {label!r} is taken; give another as LABEL=PATH")
        out.append((label, path))
    return out


# -- the folder -----------------------------------------------------------------------------------------
def _open_folder(out: Path, plan: Plan) -> dict:
    """Check ``out`` (a new or empty folder, or a benchmark folder of the same protocol and settings)."""
    state = {"protocol": plan.protocol, "fingerprint": plan.fingerprint, "card": plan.card,
             "settings": plan.settings(), "record": plan.record}
    path = out / STATE_FILE
    if out.exists() and not out.is_dir():
        raise CtrobustError(f"--out {out} exists and is not a folder; choose another --out")
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CtrobustError(f"{path} is unreadable ({exc}); choose another --out") from None
        if old.get("fingerprint") != plan.fingerprint:
            raise CtrobustError(
                f"{out} is a benchmark of protocol {old.get('protocol')!r} with fingerprint {old.get('fingerprint')}; "
                f"this run is protocol {plan.protocol!r} at {plan.size} px with fingerprint {plan.fingerprint}. "
                "Rows of different protocols cannot share a leaderboard: choose another --out")
        there, now = old.get("settings", {}), state["settings"]
        adopt = isinstance(there.get("attack"), dict) and "extend" not in there["attack"]
        if adopt:  # a folder written before the benchmark recorded --extend: it takes this run's value, kept below
            there = {**there, "attack": {**there["attack"], "extend": now["attack"]["extend"]}}
        diff = [f"{k}: {there.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(there) | set(now))
                if there.get(k) != now.get(k)]
        if diff:
            raise CtrobustError(f"{out} is a benchmark of the same protocol with other settings ({'; '.join(diff)}); "
                                "give the same --quick / --steps / --n-samples / --channels / --depth / --seed / attack budget "
                                "(--attack-steps, --restarts, --verify*, --extend), or "
                                "choose another --out")
        if adopt:
            from ctrobust.evaluation.report import write_json

            old = {**old, "settings": there}
            write_json(old, path)
        return old
    if out.is_dir() and any(out.iterdir()):
        raise CtrobustError(f"--out {out} is not empty and not a benchmark folder (no {STATE_FILE}); choose another "
                            "--out")
    from ctrobust.evaluation.report import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(state, path)
    return state


def _train_status(run: Path, steps: int) -> str:
    """``done`` (last.pt holds ``steps`` steps and best.pt exists), ``partial`` or ``new``."""
    last = run / "last.pt"
    if last.exists() and (run / "best.pt").exists():
        from ctrobust.training.checkpoint import read_checkpoint

        try:
            if int(read_checkpoint(last).get("step", 0)) >= steps:
                return "done"
        except CtrobustError:
            return "partial"
    return "partial" if run.exists() and any(run.iterdir()) else "new"


def training_cost(run: Path, steps: int | None = None) -> dict:
    """Steps, mean seconds per step and total seconds of the optimiser steps logged in ``run/steps.jsonl``
    (``steps``: the checkpoint's step, used when the log holds fewer rows, every k-th step; the total is then
    ``steps`` x the mean)."""
    path = run / "steps.jsonl"
    seconds = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row.get("seconds"), (int, float)):
                seconds.append(float(row["seconds"]))
    if not seconds:
        return {"train_steps": None, "train_s_per_step": None, "train_total_s": None}
    mean = sum(seconds) / len(seconds)
    if steps is not None and int(steps) > len(seconds):  # a log of every k-th step
        return {"train_steps": int(steps), "train_s_per_step": mean, "train_total_s": mean * int(steps)}
    return {"train_steps": len(seconds), "train_s_per_step": mean, "train_total_s": sum(seconds)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_checkpoint(path: Path, label: str, plan: Plan, train_geometry) -> dict:
    """Refuse a user's checkpoint whose geometry is not the protocol's; returns what it records."""
    from ctrobust.training.checkpoint import read_checkpoint

    data = read_checkpoint(path)
    geometry = data.get("geometry")
    if geometry != train_geometry.to_config():
        raise CtrobustError(f"--checkpoint {label}={path}: its geometry {geometry} is not the protocol's at "
                            f"{plan.size} px ({train_geometry.to_config()}); train it with the protocol's geometry "
                            "(see leaderboard.json: models.*.train_argv)")
    run = data.get("run") or {}
    return {"step": data.get("step"), "train_config": run.get("train_config") if isinstance(run, dict) else None}


# -- the run --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` did: the leaderboard rows and files, and which models it trained / attacked."""

    out: Path
    rows: list
    columns: list
    written: list
    trained: list
    attacked: list

    def text(self) -> str:
        from ctrobust.evaluation.leaderboard import markdown_table

        return markdown_table(self.rows, self.columns)


def _phase(index: int, total: int, name: str, text: str) -> None:
    print(f"benchmark [{index}/{total}] {name}: {text}", file=sys.stderr, flush=True)


def run_benchmark(spec: BenchmarkSpec) -> BenchmarkResult:
    """Train the missing models of ``spec``, attack every model under the protocol, write the leaderboard."""
    from ctrobust.app.acquisition import build_geometry
    from ctrobust.app.attack import run_attack
    from ctrobust.app.train import run_train
    from ctrobust.evaluation.report import write_json

    plan = protocol_plan(spec)
    out = Path(spec.out)
    specs = {name: model_specs(spec, plan, out, name) for name in spec.models}  # validated before any work
    users = _user_checkpoints(spec)
    train_geometry = build_geometry(TrainSpec(protocol=plan.protocol, size=plan.size), plan.size, 0)
    user_info = {label: _check_checkpoint(path, label, plan, train_geometry) for label, path in users}
    _open_folder(out, plan)
    (out / "models").mkdir(exist_ok=True)
    total = len(specs) + len(users)
    trained, attacked = [], []
    jobs = [(name, *specs[name], None) for name in spec.models] + [
        (label, None, _user_attack(spec, plan, out, label, path), path) for label, path in users]
    for index, (name, train, attack, user_path) in enumerate(jobs, 1):
        record_path = out / "models" / f"{name}.json"
        sha = _sha256(user_path) if user_path is not None else None
        if record_path.exists():
            old = json.loads(record_path.read_text())
            if sha is not None and old.get("sha256") != sha:
                raise CtrobustError(f"{out} has a row {name!r} from another file (sha256 {old.get('sha256')}); give "
                                    f"this checkpoint another label: --checkpoint OTHER={user_path}")
            _phase(index, total, name, "done (reused)")
            continue
        if train is not None:
            status = _train_status(Path(train.out), plan.train_steps)
            if status != "done":
                _phase(index, total, name, f"training {plan.train_steps} steps ({train.objective}, "
                       f"{'resuming' if status == 'partial' else 'new run'})")
                run_train(train.replace(resume=status == "partial"))
                trained.append(name)
            else:
                _phase(index, total, name, "training done (reused)")
        tuning = None
        if attack.method == ("tv",):
            tuning = _tune_tv(attack, plan, out, name, lambda text: _phase(index, total, name, text))
            attack = attack.replace(method_option=attack.method_option + (f"tv.tau={tuning['tau']!r}",))
        _phase(index, total, name, f"attacking ({attack.attack} {attack.steps} steps x {attack.restarts}, "
               f"{len(plan.eps_grid)} eps, {plan.n_samples} samples)")
        start = time.perf_counter()
        run_attack(attack.replace(force=Path(attack.out).exists()))
        seconds = time.perf_counter() - start
        attacked.append(name)
        record = _model_record(name, train, attack, seconds, plan, out, user_path, sha,
                               user_info.get(name))
        if tuning is not None:
            record["tuning"] = tuning
        write_json(record, record_path)
    rows, cols, written = _write_leaderboard(out, plan)
    print(f"benchmark: {len(rows)} models in {out}/leaderboard.md (.csv, .json, .html)", file=sys.stderr)
    return BenchmarkResult(out=out, rows=rows, columns=[c for c in cols if c not in _PRINT_SKIP], written=written,
                           trained=trained, attacked=attacked)


def _tune_tv(attack: AttackSpec, plan: Plan, out: Path, name: str, say) -> dict:
    """TV's weight for this protocol, size and dose (:func:`~ctrobust.app.inputs.choose_tv_weight`: least mean
    error on validation phantoms measured with the protocol's noise, the attack's TV iterations). Kept in
    ``tuning/NAME.json``, so a resumed run reuses it."""
    from ctrobust.app.acquisition import build_geometry
    from ctrobust.app.inputs import TV_TUNING_IMAGES, choose_tv_weight, noise_model
    from ctrobust.evaluation.report import write_json
    from ctrobust.files import resolve_device
    from ctrobust.operators.radon import RadonTransform
    from ctrobust.reconstruction.methods import method_options, parse_method_option

    path = out / "tuning" / f"{name}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == plan.fingerprint and saved.get("seed") == plan.seed:
            say(f"TV weight tau = {saved['tau']:g} (reused, {path.relative_to(out)})")
            return saved
    options = {**method_options("tv"),
               **dict(parse_method_option(text)[1:] for text in attack.method_option if text.startswith("tv."))}
    start = time.perf_counter()
    say(f"choosing the TV weight on {TV_TUNING_IMAGES} validation phantoms at the protocol's dose")
    operator = RadonTransform(build_geometry(attack, plan.size, 0))
    choice, text = choose_tv_weight(operator, None, noise_model(attack, operator), seed=plan.seed,
                                    iterations=int(options["iterations"]), nonneg=bool(options["nonneg"]),
                                    device=resolve_device(attack.device))
    record = {**choice.to_config(), "fingerprint": plan.fingerprint, "seed": plan.seed, "data": text,
              "seconds": time.perf_counter() - start}
    path.parent.mkdir(exist_ok=True)
    write_json(record, path)
    say(f"TV weight tau = {choice.tau:g} (mean error {choice.errors[choice.tau]:.4f} on validation; "
        f"{len(choice.errors)} weights tried)")
    return record


def _user_attack(spec: BenchmarkSpec, plan: Plan, out: Path, label: str, path: Path) -> AttackSpec:
    _, attack = model_specs(spec, plan, out, "fbpconvnet-plain")
    return attack.replace(checkpoint=(str(path),), out=str(out / "attack" / label))


def _model_record(name, train, attack, seconds, plan, out, user_path, sha, user_info) -> dict:
    if train is not None:
        kind, source = "trained", os.path.relpath(Path(train.out) / "best.pt", out)
        cost = training_cost(Path(train.out))
    elif user_path is not None:
        kind, source = "checkpoint", str(user_path)
        cost = training_cost(user_path.parent, (user_info or {}).get("step"))
    else:
        options = ", ".join(text.partition(".")[2] for text in attack.method_option)  # e.g. tau=10.0, filter=hann
        kind, source, cost = "method", f"method:{attack.method[0]}" + (f" ({options})" if options else ""), {}
    return {"model": name, "kind": kind, "source": source, "sha256": sha, "protocol": plan.protocol,
            "fingerprint": plan.fingerprint, "attack_s": seconds, **cost,
            "train_argv": ["train", *train.argv()] if train is not None else None,
            "train_config": train.to_dict() if train is not None else (user_info or {}).get("train_config"),
            "attack_argv": ["attack", *attack.argv()], "attack_folder": os.path.relpath(attack.out, out)}


#: leaderboard columns the command does not print (they are in the files)
_PRINT_SKIP = ("kind", "source", "protocol", "fingerprint", "verified")


def _write_leaderboard(out: Path, plan: Plan) -> tuple[list, list, list]:
    from ctrobust.evaluation import leaderboard as lb
    from ctrobust.evaluation.report import SUMMARY_FILE, plot_robustness_curves

    records = {}
    for path in sorted((out / "models").glob("*.json")):
        records[path.stem] = json.loads(path.read_text())
    rows, summaries, galleries = [], {}, []
    for name, rec in records.items():
        folder = out / rec["attack_folder"]
        result = json.loads((folder / SUMMARY_FILE).read_text())
        summary = result.get("summary", [])
        row = lb.model_row(name, summary, plan.eps_grid, result.get("verification", ()))
        row.update(kind=rec["kind"], source=rec["source"], protocol=plan.protocol, fingerprint=plan.fingerprint,
                   verified=plan.verified, attack_s=rec.get("attack_s"),
                   **{k: rec.get(k) for k in ("train_steps", "train_s_per_step", "train_total_s")})
        rows.append(row)
        summaries[name] = summary
        if (folder / "gallery.png").exists():
            galleries.append((f"gallery: {name}", folder / "gallery.png"))
    rows = lb.rank_rows(rows, max(plan.eps_grid))
    figures = []
    if summaries:
        curve = plot_robustness_curves(summaries, out / "robustness_curves.png", reference=("fbp",),
                                       title=f"{plan.protocol} at {plan.size} px: attacked (solid) and random "
                                       "(dashed) relative error")
        figures.append(("robustness curves", curve))
    meta = {**plan.record, "protocol": plan.protocol, "fingerprint": plan.fingerprint, "card": plan.card,
            "size": plan.size, "eps_grid": list(plan.eps_grid), "attack": plan.attack, "n_samples": plan.n_samples,
            "seed": plan.seed, "verified": plan.verified, "rank_eps": max(plan.eps_grid),
            "settings": plan.settings()}
    cols = lb.columns(plan.eps_grid, extra=("source", "protocol", "fingerprint", "verified"))
    written = lb.write_leaderboard(out, rows, cols, meta, figures + galleries, details=records)
    return rows, cols, written

