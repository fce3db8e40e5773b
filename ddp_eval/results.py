"""Predictions table -> scored outputs on disk. Shared by a run (rank 0) and `ddp_eval score`."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ddp_eval.report import (
    format_table,
    write_charts,
    write_failures,
    write_metrics,
    write_predictions,
    write_report_md,
    write_submission,
)
from ddp_eval.scoring.score import answer_status, extract_only, normalize_columns, score_table

log = logging.getLogger(__name__)


def finish(table: pd.DataFrame, out_dir: Path, score: bool = True, manifest: dict | None = None) -> dict | None:
    """Write predictions (+ metrics, report.md and charts when the rows have answers); return the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = normalize_columns(table)
    failures = write_failures(table, out_dir)
    if failures:
        log.warning("%d rows failed (counted as wrong); listed in %s", failures[0], failures[1])
    if answer_status(table) == "none":
        table = extract_only(table)
        write_predictions(table, out_dir)
        path = write_submission(table, out_dir)
        log.warning("the benchmark has no answers (a test split): scoring skipped; submit %s", path)
        return None
    if not score:
        write_predictions(table, out_dir)
        log.info("scoring.enabled is false: wrote predictions only")
        return None
    table, metrics = score_table(table)
    metrics["failed"] = failures[0] if failures else 0
    write_predictions(table, out_dir)
    write_metrics(metrics, out_dir)
    charts = write_charts(metrics, out_dir)
    write_report_md(metrics, out_dir, manifest, charts)
    print(format_table(metrics), flush=True)
    return metrics
