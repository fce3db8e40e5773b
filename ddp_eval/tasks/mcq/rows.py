"""A multiple-choice row: question, optional hint, options by letter, answer, categories.

Read as VLMEvalKit reads a row: a missing option cell is no option, a missing hint is no hint. MMMU's
open questions have no options and a free-text answer (scoring turns them into a two-option question,
`score.mmmu_choices`); the task says where an answer must be among the options (`check_answers`).
"""

from __future__ import annotations

import string
from collections.abc import Hashable
from dataclasses import dataclass

import pandas as pd

from ddp_eval.core.sample import Sample
from ddp_eval.data.cells import check_columns, is_missing, optional_str, sample_indices
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


def samples_from_table(table: pd.DataFrame, image_keys: list[tuple[Hashable, ...]], source: str,
                       check_answers: bool = True) -> list[McqSample]:
    _check_columns(table, source)
    indices = sample_indices(list(table["index"]), source)
    letters = [c for c in OPTION_LETTERS if c in table.columns]
    samples = []
    for pos, row in enumerate(table.to_dict("records")):
        options = {c: str(row[c]) for c in letters if not is_missing(row[c])}
        answer = None if is_missing(row.get("answer")) else str(row["answer"]).strip()
        if check_answers and answer is not None and answer not in options:
            raise DdpEvalError(
                f"{source}: row index {row['index']} has answer {answer!r}, which is not among its options "
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
    check_columns(table, ["index", "question"], source, "the mcq task")
    if not any(c in table.columns for c in ("A", "B")):
        raise DdpEvalError(f"{source}: missing required column(s) A/B (option columns); found "
                           f"{', '.join(map(str, table.columns))}")
