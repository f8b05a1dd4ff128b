"""Combine the leaderboards of one protocol run with several seeds into one table: per model, the mean over the
seeds and every seed's value of the clean error, the error at the protocol's dose and the attacked error at each
eps, with the verification ratio and the restart spread (worst over seeds).

    python -m experiments.raj2020_128px.table runs/raj2020_128px/seed0 runs/raj2020_128px/seed1 --out DIR

Writes ``DIR/combined.csv``, ``DIR/combined.json`` (with each seed's protocol fingerprint, settings and
``not_verified_reason``) and ``DIR/combined.md``. The folders must share the protocol fingerprint and every
setting but the seed (else refused).

    ... --extra runs/tv_seed0 --extra runs/tv_seed1

adds the rows of folders run with **another attack budget** (e.g. TV, whose verification alone would take hours
at 128 px on a CPU): same protocol fingerprint and settings but the attack budget and the seed, models the main
folders do not have. Every row's ``attack`` column names the budget it was measured with.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from ctrobust.evaluation.report import write_csv, write_json
from ctrobust.files import write_text

MEASURES = ("clean_relative_error", "dose_relative_error")


def load(folder: Path) -> dict:
    path = folder / "leaderboard.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: is {folder} a finished benchmark folder?")
    return json.loads(path.read_text())


def _settings(board: dict) -> dict:
    settings = dict(board.get("settings") or {})
    settings.pop("seed", None)
    return settings


def budget(board: dict) -> str:
    """The attack budget of a leaderboard, short: ``100x2, verify 2 x 300x3`` (``extend`` when recorded)."""
    a = board.get("attack") or (board.get("settings") or {}).get("attack") or {}
    if not a:
        return ""
    text = f"{a.get('steps')}x{a.get('restarts')}"
    text += f", verify {a['verify']} x {a.get('verify_steps')}x{a.get('verify_restarts')}" if a.get("verify") else ", no verify"
    if "extend" in a:
        text += f", extend {a['extend']}"
    return text


def _setting_without_budget(board: dict) -> dict:
    settings = _settings(board)
    settings.pop("attack", None)
    settings.pop("verified", None)
    return settings


def combine(boards: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per model of any leaderboard: ``<measure>`` (mean over the seeds that have it), ``<measure>_seeds``
    (each of those seeds' values) and ``seeds`` (how many)."""
    first = boards[0]
    for b in boards[1:]:
        if b.get("fingerprint") != first.get("fingerprint") or _settings(b) != _settings(first):
            raise SystemExit("the leaderboards differ in protocol or settings (other than the seed): not combined")
    attacked = [c for c in first["columns"] if c.startswith("attack_relative_error@")]
    measures = [*MEASURES, *attacked]
    by_model = [{r["model"]: r for r in b["rows"]} for b in boards]
    models = list(dict.fromkeys(r["model"] for b in boards for r in b["rows"]))
    rows = []
    for model in models:
        have = [bm for bm in by_model if model in bm]  # a model some seeds lack is averaged over the others
        row = {"model": model, "seeds": len(have)}
        for m in measures:
            values = [bm[model].get(m) for bm in have]
            if any(v is None for v in values):
                row[m] = None
                continue
            row[m] = statistics.fmean(values)
            row[f"{m}_seeds"] = " / ".join(f"{v:.4f}" for v in values)
        for m, pick in (("verify_ratio", min), ("restart_spread", max)):
            values = [bm[model].get(m) for bm in have if bm[model].get(m) is not None]
            row[m] = pick(values) if values else None
        row["attack"] = budget(first)
        rows.append(row)
    last = attacked[-1] if attacked else "clean_relative_error"
    rows.sort(key=lambda r: (r[last] is None, r[last] or 0.0))
    return rows, measures


def add_extra(rows: list[dict], measures: list[str], main: list[dict], extra: list[dict]) -> list[dict]:
    """``rows`` of the main folders with the rows of ``extra`` folders (another attack budget) added, ranked
    together; refused (SystemExit) for another protocol, other settings than the budget, or a model both have."""
    first = main[0]
    for b in extra:
        if b.get("fingerprint") != first.get("fingerprint") or _setting_without_budget(b) != _setting_without_budget(first):
            raise SystemExit("an --extra leaderboard differs in protocol or settings (other than the attack budget "
                             "and the seed): not combined")
    more, extra_measures = combine(extra)
    if extra_measures != measures:
        raise SystemExit("an --extra leaderboard has another eps grid: not combined")
    both = sorted({r["model"] for r in rows} & {r["model"] for r in more})
    if both:
        raise SystemExit(f"models in both the main and the --extra folders: {', '.join(both)}; give each model once")
    last = [m for m in measures if m.startswith("attack_relative_error@")] or ["clean_relative_error"]
    return sorted(rows + more, key=lambda r: (r[last[-1]] is None, r[last[-1]] or 0.0))


def markdown(rows: list[dict], measures: list[str]) -> str:
    head = ["model", "seeds", *[m.replace("attack_relative_error@", "eps ").replace("_relative_error", "") for m in measures],
            "verify ratio (min)", "restart spread (max)", "attack"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["seeds"])]
        for m in measures:
            cells.append("" if r[m] is None else f"{r[m]:.4f} ({r[f'{m}_seeds']})")
        cells += ["" if r[k] is None else f"{r[k]:.3f}" for k in ("verify_ratio", "restart_spread")]
        cells.append(r.get("attack") or "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="benchmark folders of the same protocol, one per seed")
    p.add_argument("--extra", type=Path, action="append", default=[], metavar="FOLDER",
                   help="a benchmark folder of the same protocol and settings but another attack budget, whose "
                        "models the main folders lack (repeatable, one per seed)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    args = p.parse_args(argv)
    boards = [load(f) for f in args.folders]
    rows, measures = combine(boards)
    extra = [load(f) for f in args.extra]
    if extra:
        rows = add_extra(rows, measures, boards, extra)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "combined.csv")
    write_json({
        "rows": rows, "folders": [str(f) for f in args.folders],
        "protocol": boards[0].get("protocol"), "fingerprint": boards[0].get("fingerprint"),
        "seeds": [(b.get("settings") or {}).get("seed") for b in boards],
        "settings": _settings(boards[0]), "not_verified_reason": [b.get("not_verified_reason") for b in boards],
        "extra_folders": [str(f) for f in args.extra], "extra_seeds": [(b.get("settings") or {}).get("seed") for b in extra],
        "extra_attack": [budget(b) for b in extra]},
        args.out / "combined.json")
    table = markdown(rows, measures)
    write_text(args.out / "combined.md", table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
