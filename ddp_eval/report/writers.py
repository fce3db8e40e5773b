"""Final files in the output dir: predictions.tsv, metrics.json, the task's tables as CSV, report.md,
failures.tsv, the submission file of a test split, and the text printed at the end of a run.

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pandas as pd

from ddp_eval.core.parity import describe
from ddp_eval.core.tables import ReportTable
from ddp_eval.store.atomic import atomic_write_text, replacing

PREDICTIONS = "predictions.tsv"
METRICS = "metrics.json"
SUBMISSION = "submission.xlsx"
FAILURES = "failures.tsv"
REPORT = "report.md"
# Files a run writes into its output dir that could be mistaken for a benchmark file.
OUTPUT_FILES = frozenset({PREDICTIONS, SUBMISSION, FAILURES, "summary.csv", "accuracy_by_category.csv"})


def write_predictions(table: pd.DataFrame, out_dir: Path) -> Path:
    path = out_dir / PREDICTIONS
    # Quote every text cell: a reply may hold tabs, newlines or a bare carriage return, which
    # minimal quoting leaves bare and which would split the row for any TSV reader.
    atomic_write_text(path, table.to_csv(sep="\t", index=False, quoting=csv.QUOTE_NONNUMERIC))
    return path


def write_failures(table: pd.DataFrame, out_dir: Path) -> tuple[int, Path] | None:
    """failures.tsv: index + reason of every row that got no prediction; None when there are none."""
    path = out_dir / FAILURES
    if "error" not in table.columns:
        return None
    failed = table[table["error"].fillna("").astype(str) != ""]
    if failed.empty:
        path.unlink(missing_ok=True)
        return None
    atomic_write_text(path, failed[["index", "error"]].to_csv(sep="\t", index=False, quoting=csv.QUOTE_NONNUMERIC))
    return len(failed), path


def write_submission(table: pd.DataFrame, out_dir: Path) -> Path:
    """VLMEvalKit's prediction file (XLSX with a prediction column), as an evaluation server takes it."""
    path = out_dir / SUBMISSION
    with replacing(path) as tmp:
        table.to_excel(tmp, index=False, engine="openpyxl")
    return path


def write_metrics(metrics: dict, tables: list[ReportTable], out_dir: Path) -> list[Path]:
    """metrics.json, and one CSV per table of the task."""
    paths = [out_dir / METRICS]
    atomic_write_text(paths[0], json.dumps(_clean(metrics), indent=2, ensure_ascii=False) + "\n")
    for table in tables:
        path = out_dir / f"{table.name}.csv"
        atomic_write_text(path, table_csv(table))
        paths.append(path)
    return paths


def table_csv(table: ReportTable) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([table.key] + [c.key for c in table.columns])
    for label, values in table.rows:
        writer.writerow([label] + ["" if v is None else f"{v:.4f}" if c.percent else f"{v:g}"
                                   for c, v in zip(table.columns, values)])
    return buf.getvalue()


def _cell(value: float | None, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value * 100:.2f}%" if percent else f"{value:g}"


def format_summary(title: str, headline: list[str], tables: list[ReportTable]) -> str:
    """The plain text printed at the end of a run: the headline, then each table under its own title."""
    lines = [title] + [f"  {line.replace('**', '')}" for line in headline]
    for table in tables:
        if not table.rows:
            continue
        width = max(44, *(len(label) + 2 for label, _ in table.rows))
        head = f"{'by ' + table.key:{width}s}" + "".join(f" {c.label[:12]:>12s}" for c in table.columns)
        lines += ["", head, "-" * len(head)]
        for label, values in table.rows:
            lines.append(f"{'  ' + label:{width}s}" + "".join(f" {_cell(v, c.percent):>12s}"
                                                             for c, v in zip(table.columns, values)))
    return "\n".join(lines)


def _clean(value):
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_report_md(headline: list[str], tables: list[ReportTable], out_dir: Path, manifest: dict | None,
                    charts: list[Path], failed: int = 0, parity: dict | None = None) -> Path:
    """report.md: headline numbers, the task's tables, charts, and what ran."""
    lines = ["# Evaluation report", ""]
    if manifest:
        lines += [f"- benchmark: **{manifest.get('benchmark')}** ({manifest.get('rows')} rows)",
                  f"- model: `{manifest.get('identity', {}).get('model')}`"]
    lines += [f"- {line}" for line in headline]
    if failed:
        lines.append(f"- failed rows (counted wrong): {failed}, see failures.tsv")
    if parity is not None:
        warning = "" if parity["ok"] else f" **below {parity['min_agreement']:.0%}: check the batched path**"
        lines.append(f"- {describe(parity)}{warning}")
    for table in tables:
        lines += ["", f"## By {table.key}", "", f"| {table.key} | " + " | ".join(c.label for c in table.columns) + " |",
                  "| --- |" + " ---: |" * len(table.columns)]
        for label, values in table.rows:
            lines.append(f"| {label} | " + " | ".join(_cell(v, c.percent) for c, v in zip(table.columns, values))
                         + " |")
    if charts:
        lines += ["", "## Charts", ""] + [f"![{p.stem}]({p.name})" for p in charts]
    if manifest:
        t = manifest["timings"]
        rate = f"{t['rows_per_s']:.2f}" if t.get("rows_per_s") else "n/a"
        lines += ["", "## Run", "", f"- world size: {manifest['world_size']}",
                  f"- rows predicted this run: {t['rows_predicted']} in {t['predict_s']:.1f} s ({rate} rows/s)",
                  f"- git commit: {manifest.get('git_commit')}",
                  "- versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items() if v),
                  "- full details: manifest.json"]
    path = out_dir / REPORT
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
