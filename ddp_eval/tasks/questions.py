"""A question row of a yes/no or short-answer benchmark: its question and its answer (a TSV cell as
VLMEvalKit reads it: TextVQA's answer is the printed list of its 10 answers); the scoring columns
(category, image_path, split, ...) stay in the table, where scoring reads them."""

from __future__ import annotations

from dataclasses import dataclass

from ddp_eval.core.sample import Sample
from ddp_eval.data.cells import check_columns, optional_str, sample_indices
from ddp_eval.data.rows import RawRows
from ddp_eval.errors import DdpEvalError


@dataclass(frozen=True)
class QuestionSample(Sample):
    question: str
    answer: str | None


def question_samples(rows: RawRows, needed: list[str], who: str) -> list[QuestionSample]:
    """The rows as samples; `needed`: the columns `who` (e.g. "POPE (task yorn)") reads besides the question."""
    table = rows.table
    check_columns(table, ["index", "question", *needed], rows.source, who)
    indices = sample_indices(list(table["index"]), rows.source)
    samples = [QuestionSample(index=i, image_keys=keys, question=str(q), answer=optional_str(a))
               for i, keys, q, a in zip(indices, rows.image_keys, table["question"],
                                        table["answer"] if "answer" in table.columns else [None] * len(table))]
    if not samples:
        raise DdpEvalError(f"{rows.source}: the benchmark has no rows")
    return samples
