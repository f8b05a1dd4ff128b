"""The report's Markdown as a Markdown parser reads it: every table keeps its columns (a bare ``|`` in a
cell, as in the ``||J||`` header, used to split cells), and the training curves of the checkpoints'
run folders are drawn and linked."""

import csv
import html
import re

import pytest

from ctrobust.evaluation import report as rp

markdown_it = pytest.importorskip("markdown_it")

PNG = b"\x89PNG\r\n\x1a\n"


def attack_summary(model):
    """Rows as ``ctrobust attack`` writes them, with the diagnostics whose headers hold pipes (``||J||``)."""
    rows = []
    for eps in (0.0, 0.01, 0.02):
        for cond, k in (("clean", 0.0), ("random", 1.0), ("attack", 5.0)):
            err = 0.1 + k * eps
            row = {"model": model, "eps": eps, "condition": cond, "n": 2, "relative_error_mean": err,
                   "psnr_mean": 20.0 - 100 * eps, "ssim_mean": 0.9 - err}
            if cond == "attack":
                row.update({"jacobian_norm_mean": 0.178, "converged_mean": 1.0, "restart_spread_mean": 0.001,
                            "exact_relative_error_mean": err * 1.01, "attack_over_exact_min": 0.99})
            rows.append(row)
    return rows


def write_log(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def result_with_run(tmp_path, model="net | v2"):
    """A result folder whose model's checkpoint lies in a training run folder with steps.csv and validation.csv."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"not read by the report")
    write_log(run / "steps.csv", [{"step": s, "epoch": 0, "loss": 1.0 / s} for s in range(1, 21)])
    write_log(run / "validation.csv", [{"step": s, "val_mse": 0.01 / s, "val_relative_error": 0.3 / s} for s in (5, 10, 20)])
    folder = tmp_path / "attack"
    folder.mkdir()
    rp.write_json({"command": "attack", "config": {"steps": 7},
                   "models": [{"label": model, "source": str(run / "best.pt")}, {"label": "FBP", "source": "method:fbp"}],
                   "summary": attack_summary(model) + attack_summary("FBP")}, folder / "summary.json")
    return folder


def parsed_tables(text):
    """Each Markdown table as (header cells, body rows of cells), read by markdown-it-py with tables on."""
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(text)
    tables, row, section = [], None, None
    for tok in tokens:
        if tok.type == "table_open":
            tables.append(([], []))
        elif tok.type in ("thead_open", "tbody_open"):
            section = tok.type[:5]
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "inline" and row is not None:
            row.append(tok.content)
        elif tok.type == "tr_close":
            if section == "thead":
                tables[-1][0].extend(row)
            else:
                tables[-1][1].append(row)
            row = None
    return tables


def test_report_tables_parse_with_their_columns(tmp_path):
    folder = result_with_run(tmp_path)
    out = rp.build_report([folder], tmp_path / "report.md")
    text = out.read_text()
    tables = parsed_tables(text)
    rows, cols = rp.attack_table(attack_summary("net | v2") + attack_summary("FBP"))
    assert "||J||" in cols and len(cols) > 10
    assert len(tables) == 2  # the models, the attack table
    for header, body in tables:
        assert body and all(len(r) == len(header) for r in body)
    header, body = tables[1]
    assert len(header) == len(cols)  # the parser sees every column, none split by a pipe
    assert header[cols.index("||J||")] == "||J||" and r"\|\|J\|\|" in text  # escaped in the source ...
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    assert "<th>||J||</th>" in rendered and f"<td>{html.escape('net | v2')}</td>" in rendered  # ... shown as pipes
    assert len(body) == len(rows)


def test_report_shows_training_curves(tmp_path):
    folder = result_with_run(tmp_path)
    out = rp.build_report([folder], tmp_path / "report.md")
    figure = tmp_path / "report.training.png"
    assert figure.read_bytes()[:8] == PNG
    assert "](report.training.png)" in out.read_text()
    assert rp.training_runs([{"label": "FBP", "source": "method:fbp"}, {"label": "x", "source": str(tmp_path / "nope.pt")}]) == {}
    with pytest.raises(rp.CtrobustError, match="report.md already exists"):
        rp.build_report([folder], out)
    out.unlink()
    with pytest.raises(rp.CtrobustError, match="training.png already exists"):  # never overwritten silently
        rp.build_report([folder], out)
    rp.build_report([folder], out, force=True)
    html_out = rp.build_report([folder], tmp_path / "page.html")
    page = html_out.read_text()
    assert page.count("data:image/png;base64,") == 1 and "<th>||J||</th>" in page
    cells = re.findall(r"<tr>(.*?)</tr>", page)
    assert len({len(re.findall(r"<t[dh]>", c)) for c in cells[3:]}) == 1  # every row of the attack table


def test_markdown_cells_escape_pipes():
    md = rp.format_table([{"a|b": "x | y", "c": 1.0}], ["a|b", "c"], style="markdown")
    (header, body), = parsed_tables(md)
    assert len(header) == 2 and body == [["x | y", "1"]]
