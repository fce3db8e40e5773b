"""Final files in the output dir: predictions.tsv, metrics.json, per-category CSVs, a printed table.

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

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


def write_charts(metrics: dict, out_dir: Path) -> list[Path]:
    """Bar charts of accuracy by category and l2-category (PNG); needs matplotlib (pip install ddp_eval[plot])."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no charts (pip install 'ddp_eval[plot]')")
        return []
    paths = []
    circular = metrics.get("circular")
    for key, name in (("category", "accuracy_by_category.png"), ("l2-category", "accuracy_by_l2_category.png")):
        labels = list(metrics["accuracy"][key])
        if not labels:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
        ys = range(len(labels))
        height = 0.4 if circular else 0.7
        ax.barh([y + (height / 2 if circular else 0) for y in ys],
                [metrics["accuracy"][key][n] * 100 for n in labels], height=height, label="accuracy")
        if circular:
            ax.barh([y - height / 2 for y in ys], [(circular[key].get(n) or 0) * 100 for n in labels],
                    height=height, label="CircularEval")
            ax.legend(loc="lower right")
        ax.set_yticks(list(ys), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("accuracy (%)")
        ax.set_title(f"Accuracy by {key} ({metrics['rows']} rows)")
        fig.tight_layout()
        path = out_dir / name
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def write_report_md(metrics: dict, out_dir: Path, manifest: dict | None, charts: list[Path]) -> Path:
    """report.md: headline numbers, the per-category table, charts, and what ran."""
    acc = metrics["accuracy"]
    circular = metrics.get("circular")
    lines = ["# Evaluation report", ""]
    if manifest:
        lines += [f"- benchmark: **{manifest.get('benchmark')}** ({manifest.get('rows')} rows)",
                  f"- model: `{manifest.get('identity', {}).get('model')}`"]
    lines += [f"- accuracy: **{acc['overall'] * 100:.2f}%** over {metrics['rows']} rows"]
    if circular:
        lines.append(f"- CircularEval: **{circular['overall'] * 100:.2f}%** over {circular['groups']} questions")
    if metrics.get("failed"):
        lines.append(f"- failed rows (counted wrong): {metrics['failed']}, see failures.tsv")
    for key in ("l2-category", "category"):
        lines += ["", f"## By {key}", "", f"| {key} | accuracy |" + (" CircularEval |" if circular else ""),
                  "| --- | ---: |" + (" ---: |" if circular else "")]
        for name, value in acc[key].items():
            row = f"| {name} | {value * 100:.2f}% |"
            if circular:
                c = circular[key].get(name)
                row += f" {'' if c is None else f'{c * 100:.2f}%'} |"
            lines.append(row)
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
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
