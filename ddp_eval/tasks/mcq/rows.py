"""A multiple-choice row: question, optional hint, options by letter, answer, categories.

Read as VLMEvalKit reads a row: a missing option cell is no option, a missing hint is no hint.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import pandas as pd

from ddp_eval.core.sample import Sample
from ddp_eval.data.cells import as_index, check_unique, is_missing, optional_str
from ddp_eval.errors import DdpEvalError

OPTION_LETTERS = tuple(string.ascii_uppercase)


@dataclass(frozen=True)
class McqSample(Sample):
    question: str
    hint: str | None
    options: dict[str, str]  # letter -> text exactly as the prompt shows it
    answer: str | None
    category: str | None
    l2_category: str | None


def samples_from_table(table: pd.DataFrame, image_keys: list[tuple[int, ...]], source: str) -> list[McqSample]:
    _check_columns(table, source)
    indices = [as_index(v, source, pos) for pos, v in enumerate(table["index"])]
    check_unique(indices, source)
    letters = [c for c in OPTION_LETTERS if c in table.columns]
    samples = []
    for pos, row in enumerate(table.to_dict("records")):
        options = {c: str(row[c]) for c in letters if not is_missing(row[c])}
        answer = None if is_missing(row.get("answer")) else str(row["answer"]).strip()
        if answer is not None and answer not in options:
            raise DdpEvalError(
                f"{source}: row index {indices[pos]} has answer {answer!r}, which is not among its options "
                f"{sorted(options)}"
            )
        samples.append(McqSample(
            index=indices[pos], image_keys=image_keys[pos], question=str(row["question"]),
            hint=optional_str(row.get("hint")), options=options, answer=answer,
            category=optional_str(row.get("category")), l2_category=optional_str(row.get("l2-category")),
        ))
    if not samples:
        raise DdpEvalError(f"{source}: the benchmark has no rows")
    return samples


def _check_columns(table: pd.DataFrame, source: str) -> None:
    missing = [c for c in ("index", "question") if c not in table.columns]
    if not any(c in table.columns for c in ("A", "B")):
        missing.append("A/B (option columns)")
    if missing:
        raise DdpEvalError(
            f"{source}: missing required column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}"
        )
