"""Score a predictions table: extract the option letter per row, hits, accuracy, CircularEval and
VLMEvalKit's `report_acc` per split.

Works on a pandas table with VLMEvalKit's columns (index, question, A.., answer, category,
l2-category, split, prediction), whether it came from a run or from a VLMEvalKit file. MMMU is scored
as VLMEvalKit's `mcq_vanilla_eval` scores it (`MMMU_preproc`): a row without an A option becomes
A = its answer text, B = "Other Answers", and a ground truth that is not a letter counts as A. No torch here.
"""

from __future__ import annotations

import string

import pandas as pd

from ddp_eval.data.cells import integer_index, is_missing, optional_str
from ddp_eval.tasks.mcq.extract import extract_option
from ddp_eval.tasks.mcq.metrics import ScoredRow, accuracy, circular_rows, has_circular, report_acc

LETTERS = list(string.ascii_uppercase)
MMMU_OTHER = "Other Answers"


def normalize_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Lower-case column names except option letters, as VLMEvalKit's evaluation does."""
    return table.rename(columns={c: c if c in LETTERS else str(c).lower() for c in table.columns})


# VLMEvalKit's evaluate_heuristic runs CircularEval for these names only; other benchmarks score row by row
# whatever their indices.
CIRCULAR_NAMES = ("mmbench", "ccbench", "circular", "mmcr")


def circular_by_name(benchmark: str) -> bool:
    """Whether a benchmark with circular copies is scored by CircularEval; with no name, the copies decide."""
    return not benchmark or any(name in benchmark.lower() for name in CIRCULAR_NAMES)


def is_mmmu(benchmark: str) -> bool:
    return "MMMU" in benchmark  # VLMEvalKit's test in mcq_vanilla_eval


def choices_of(row: dict) -> dict[str, object]:
    return {c: row[c] for c in LETTERS if c in row and not pd.isna(row[c])}


def mmmu_choices(row: dict) -> dict[str, object]:
    """MMMU_preproc: an open question (no A) is asked as A = the answer text, B = 'Other Answers'."""
    if "A" in row and is_missing(row["A"]):
        row = {**row, "A": row["answer"], "B": MMMU_OTHER}
    return choices_of(row)


def truth(row: dict, mmmu: bool) -> str:
    if mmmu:
        answer = str(row["answer"])
        return answer if answer in LETTERS else "A"
    return str(row["answer"])  # as VLMEvalKit's answer_map holds it: "B " matches no extracted letter


def extract_all(records: list[dict], mmmu: bool) -> list[str]:
    choices = mmmu_choices if mmmu else choices_of
    return [extract_option(r["prediction"], choices(r)) for r in records]


def score_table(table: pd.DataFrame, benchmark: str = "") -> tuple[pd.DataFrame, dict]:
    """Add `extracted` and `hit` columns; return the table and the metrics."""
    table = table.copy()
    mmmu = is_mmmu(benchmark)
    records = table.to_dict("records")
    extracted = extract_all(records, mmmu)
    table["extracted"] = extracted
    table["hit"] = [int(e == truth(r, mmmu)) for e, r in zip(extracted, records)]
    integer = all(integer_index(r["index"]) is not None for r in records)
    rows = [
        ScoredRow(
            index=integer_index(r["index"]) if integer else pos,
            category=optional_str(r.get("category")),
            l2_category=optional_str(r.get("l2-category")),
            hit=bool(h),
            # a string index has no circular copies (VLMEvalKit's CircularEval needs integer indices)
            group=(integer_index(r["g_index"]) if "g_index" in r and not is_missing(r["g_index"]) else
                   None if integer else pos),
            split=optional_str(r.get("split")) if "split" in table.columns else None,
        )
        for pos, (r, h) in enumerate(zip(records, table["hit"]))
    ]
    metrics = {"rows": len(rows), "accuracy": accuracy(rows)}
    reported = rows
    if has_circular(rows) and circular_by_name(benchmark):
        groups = circular_rows(rows)
        metrics["circular"] = {**accuracy(groups), "groups": len(groups)}
        reported = groups
    if "split" in table.columns:
        splits = sorted({r.split for r in rows if r.split is not None})
        metrics["splits"] = {s: accuracy([r for r in reported if r.split == s]) for s in splits}
    metrics["report_acc"] = report_acc(reported)
    return table, metrics


def extract_only(table: pd.DataFrame, benchmark: str = "") -> pd.DataFrame:
    """For TEST splits: the extracted letter per row, no hits."""
    table = table.copy()
    table["extracted"] = extract_all(table.to_dict("records"), is_mmmu(benchmark))
    return table
