"""``ctrobust evaluate``: clean metrics of checkpoints (and FBP) on a data split, as a table.

Writes ``samples.csv`` (per sample), ``summary.csv`` and ``summary.json`` into ``--out`` and prints the
table. ``run`` is split into steps (load the models and data, evaluate each condition, write) so that
other evaluation conditions (e.g. a distribution shift, test-time training) can be added as further
entries of :func:`conditions`.
"""

from __future__ import annotations

import argparse
import sys

from ctrobust.cli.attack import add_model_arguments, load_inputs, progress_enabled

#: columns of the printed table (mean over samples)
TABLE_COLUMNS = ("model", "condition", "n", "mse_mean", "relative_error_mean", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "evaluate",
        help="clean reconstruction metrics (MSE, relative error, PSNR, SSIM) of checkpoints and FBP",
        description="Reconstruct y = A x of every sample of a split with each checkpoint / method (and FBP as a "
        "reference) and report MSE, relative error, PSNR (dB, data range 1) and SSIM. Writes samples.csv, "
        "summary.csv and summary.json into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_arguments(p)
    p.set_defaults(out="results/evaluate", func=run)
    return p


def conditions(args, recs, dataset) -> list[tuple[str, object]]:
    """``(name, dataset)`` pairs to evaluate; ``"clean"`` is the split itself.

    Further conditions (a shifted dataset, ...) are added here, each evaluated like the clean one.
    """
    return [("clean", dataset)]


def evaluate(args, recs, dataset) -> tuple[list[dict], list[dict]]:
    """Per-sample rows and summary rows for every reconstruction and condition."""
    from ctrobust.robustness import clean_metrics

    sample_rows, summary_rows = [], []
    for condition, data in conditions(args, recs, dataset):
        for rec in recs:
            rows, summary = clean_metrics(rec.f, data, rec.operator, batch_size=args.batch_size,
                                          max_samples=args.n_samples, progress=progress_enabled(args))
            sample_rows += [{"model": rec.label, "condition": condition, **r} for r in rows]
            summary_rows.append({"model": rec.label, "condition": condition, **summary})
    return sample_rows, summary_rows


def run(args) -> int:
    from ctrobust import __version__
    from ctrobust import report as rp

    rp.prepare_output_dir(args.out, args.force, create=False)
    recs, dataset = load_inputs(args)
    out = rp.prepare_output_dir(args.out, args.force)
    sample_rows, summary_rows = evaluate(args, recs, dataset)
    config = {"data": args.data or "built-in phantoms", "split": args.split,
              "n_samples": summary_rows[0]["n"] if summary_rows else 0}
    models = [{"label": r.label, "source": r.source, "kind": r.kind, "info": r.info} for r in recs]
    rp.write_csv(sample_rows, out / "samples.csv")
    rp.write_csv(summary_rows, out / "summary.csv")
    rp.write_json({"command": "evaluate", "ctrobust_version": __version__, "config": config, "models": models,
                   "summary": summary_rows}, out / rp.SUMMARY_FILE)
    print(rp.format_table(summary_rows, [c for c in TABLE_COLUMNS if any(c in r for r in summary_rows)]))
    print(f"wrote {out}/: samples.csv, summary.csv, summary.json", file=sys.stderr)
    return 0
