"""Predictions table -> scored outputs on disk, by the benchmark's task. Shared by a run (rank 0) and
`ddp_eval score`."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ddp_eval.errors import DdpEvalError
from ddp_eval.report.charts import write_charts
from ddp_eval.report.writers import (
    format_summary,
    write_failures,
    write_metrics,
    write_predictions,
    write_report_md,
    write_submission,
)
from ddp_eval.tasks.base import Task

log = logging.getLogger(__name__)


def check_rows(table: pd.DataFrame, what: str) -> None:
    """A predictions table to score has rows, and each index once (two rows of one index would both count)."""
    if table.empty:
        raise DdpEvalError(f"{what}: the predictions table has no rows; nothing to score")
    if "index" in table.columns:
        counts = table["index"].astype(str).value_counts()
        dupes = sorted(counts[counts > 1].index)
        if dupes:
            raise DdpEvalError(f"{what}: index {', '.join(dupes[:10])}{' ...' if len(dupes) > 10 else ''} appears more "
                               "than once; every row of a predictions file needs its own index")


# The texts pandas reads as a missing value by default (pandas' STR_NA_VALUES). VLMEvalKit writes the
# replies to a file and scores them as `load` reads it back, so a reply of "None", "N/A" or "" reaches its
# rules as NaN, i.e. the text "nan"; `ddp_eval score` on predictions.tsv reads them the same way.
READ_AS_MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                             "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def score_as_read_back(task: Task, table: pd.DataFrame, benchmark: str) -> tuple[pd.DataFrame, dict]:
    """The task's score of the replies as VLMEvalKit reads them back from its predictions file; the table
    that comes back (predictions.tsv) keeps each reply as the model gave it."""
    raw = dict(zip(table["index"], table["prediction"]))
    read_back = table["prediction"].map(lambda p: float("nan") if isinstance(p, str) and p in READ_AS_MISSING else p)
    scored, metrics = task.score(table.assign(prediction=read_back), benchmark)
    return scored.assign(prediction=scored["index"].map(raw)), metrics


def finish(task: Task, table: pd.DataFrame, out_dir: Path, score: bool = True, manifest: dict | None = None,
           title: str = "", benchmark: str | None = None, parity: dict | None = None) -> dict | None:
    """Write predictions (+ metrics, report.md and charts when the rows have answers); return the metrics.
    `benchmark` picks the task's rules (MME, POPE, ... score differently); by default the manifest's."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DdpEvalError(f"output dir {out_dir}: a file of that name (or above it) is in the way; pick another "
                           "output dir") from None
    if benchmark is None:
        benchmark = (manifest or {}).get("benchmark") or ""
    table = task.normalize_columns(table)
    check_rows(table, title or benchmark or str(out_dir))
    failures = write_failures(table, out_dir)
    if failures:
        log.warning("%d rows failed (counted as wrong); listed in %s", failures[0], failures[1])
    if not score:
        write_predictions(table, out_dir)
        log.info("scoring.enabled is false: wrote predictions only")
        return None
    if task.answer_status(table) == "none":
        table = task.extract_only(table, benchmark)
        write_predictions(table, out_dir)
        path = write_submission(table, out_dir)
        log.warning("the benchmark has no answers (a test split): scoring skipped; submit %s", path)
        return None
    replies = table["prediction"]
    if len(replies) and replies.map(lambda p: not isinstance(p, str) or not p.strip()).all():
        log.warning("every reply is empty (%d rows): the scores below are those of no answer; check the model and "
                    "generation settings (generation.max_new_tokens, the chat template)", len(replies))
    table, metrics = score_as_read_back(task, table, benchmark)
    metrics["failed"] = failures[0] if failures else 0
    if parity is not None:
        metrics["parity"] = parity
    tables, headline = task.tables(metrics, benchmark), task.headline(metrics, benchmark)
    write_predictions(table, out_dir)
    write_metrics(metrics, tables, out_dir)
    charts = write_charts(tables, out_dir)
    write_report_md(headline, tables, out_dir, manifest, charts, failed=metrics["failed"], parity=parity)
    print(format_summary(title or (manifest or {}).get("benchmark") or str(out_dir), headline, tables), flush=True)
    return metrics
