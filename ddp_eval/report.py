"""Final files in the output dir: predictions.tsv, metrics.json, per-category CSVs, a printed table.

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import pandas as pd

PREDICTIONS = "predictions.tsv"
METRICS = "metrics.json"
SUBMISSION = "submission.xlsx"
FAILURES = "failures.tsv"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    """VLMEvalKit's prediction file (XLSX with a prediction column), as MMBench's server takes it."""
    path = out_dir / SUBMISSION
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_excel(tmp, index=False, engine="openpyxl")
    os.replace(tmp, path)
    return path


def write_metrics(metrics: dict, out_dir: Path) -> list[Path]:
    paths = [out_dir / METRICS]
    atomic_write_text(paths[0], json.dumps(_clean(metrics), indent=2, ensure_ascii=False) + "\n")
    for key, name in (("category", "accuracy_by_category.csv"), ("l2-category", "accuracy_by_l2_category.csv")):
        path = out_dir / name
        atomic_write_text(path, _category_csv(metrics, key))
        paths.append(path)
    return paths


def _category_csv(metrics: dict, key: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    circular = metrics.get("circular")
    writer.writerow([key, "accuracy"] + (["circular_accuracy"] if circular else []))
    for name, acc in metrics["accuracy"][key].items():
        row = [name, f"{acc:.4f}"]
        if circular:
            value = circular[key].get(name)
            row.append("" if value is None else f"{value:.4f}")
        writer.writerow(row)
    return buf.getvalue()


def format_table(metrics: dict) -> str:
    """A short plain-text table: overall and per category, vanilla and (if present) circular."""
    circular = metrics.get("circular")
    head = f"{'':44s} {'acc':>7s}" + (f" {'circ':>7s}" if circular else "")
    lines = [head, "-" * len(head)]

    def line(label: str, acc: float, circ: float | None) -> str:
        text = f"{label[:44]:44s} {acc * 100:6.2f}%"
        if circular:
            text += f" {circ * 100:6.2f}%" if circ is not None else f" {'':>7s}"
        return text

    lines.append(line(f"Overall ({metrics['rows']} rows)", metrics["accuracy"]["overall"],
                      circular["overall"] if circular else None))
    for key in ("l2-category", "category"):
        for name, acc in metrics["accuracy"][key].items():
            lines.append(line(f"  {name}", acc, circular[key].get(name) if circular else None))
    return "\n".join(lines)


def _clean(value):
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value
