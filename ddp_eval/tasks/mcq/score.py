"""Score a predictions table: extract the option letter per row, hits, accuracy and CircularEval.

Works on a pandas table with VLMEvalKit's columns (index, question, A.., answer, category,
l2-category, prediction), whether it came from a run or from a VLMEvalKit file. No torch here.
"""

from __future__ import annotations

import string

import pandas as pd

from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.mcq.extract import extract_option
from ddp_eval.tasks.mcq.metrics import ScoredRow, accuracy, circular_rows, has_circular

LETTERS = list(string.ascii_uppercase)


def normalize_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Lower-case column names except option letters, as VLMEvalKit's evaluation does."""
    return table.rename(columns={c: c if c in LETTERS else str(c).lower() for c in table.columns})


def choices_of(row: dict) -> dict[str, object]:
    return {c: row[c] for c in LETTERS if c in row and not pd.isna(row[c])}


def score_table(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Add `extracted` and `hit` columns; return the table and the metrics."""
    table = table.copy()
    for column in ("index", "prediction"):
        if column not in table.columns:
            raise DdpEvalError(f"predictions table has no {column!r} column; found {', '.join(table.columns)}")
    records = table.to_dict("records")
    extracted = [extract_option(r["prediction"], choices_of(r)) for r in records]
    table["extracted"] = extracted
    table["hit"] = [int(e == str(r["answer"]).strip()) for e, r in zip(extracted, records)]
    rows = [
        ScoredRow(
            index=int(r["index"]),
            category=None if pd.isna(r.get("category")) else str(r["category"]),
            l2_category=None if pd.isna(r.get("l2-category")) else str(r["l2-category"]),
            hit=bool(h),
            group=int(r["g_index"]) if "g_index" in r and not pd.isna(r["g_index"]) else None,
        )
        for r, h in zip(records, table["hit"])
    ]
    metrics = {"rows": len(rows), "accuracy": accuracy(rows)}
    if has_circular(rows):
        groups = circular_rows(rows)
        metrics["circular"] = {**accuracy(groups), "groups": len(groups)}
    return table, metrics


def extract_only(table: pd.DataFrame) -> pd.DataFrame:
    """For TEST splits: the extracted letter per row, no hits."""
    table = table.copy()
    table["extracted"] = [extract_option(r["prediction"], choices_of(r)) for r in table.to_dict("records")]
    return table
