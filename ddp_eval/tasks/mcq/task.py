"""The multiple-choice task: MCQ rows in, VLMEvalKit's prompt, `can_infer` extraction, accuracy and
CircularEval (where circular copies exist) out."""

from __future__ import annotations

import pandas as pd

from ddp_eval.core.tables import Column, ReportTable
from ddp_eval.data.rows import RawRows
from ddp_eval.tasks.base import Content, Task, image_item, text_item
from ddp_eval.tasks.mcq.prompt import default_prompt
from ddp_eval.tasks.mcq.rows import McqSample, samples_from_table
from ddp_eval.tasks.mcq.score import extract_only, normalize_columns, score_table

GROUPINGS = (("l2-category", "accuracy_by_l2_category"), ("category", "accuracy_by_category"))


class MultipleChoiceTask(Task):
    name = "mcq"
    prompt_kind = "mcq"

    def samples(self, rows: RawRows) -> list[McqSample]:
        return samples_from_table(rows.table, rows.image_keys, rows.source)

    def content(self, sample: McqSample, benchmark: str) -> Content:
        return [*(image_item(k) for k in sample.image_keys), text_item(default_prompt(sample))]

    def choices(self, sample: McqSample) -> tuple[str, ...]:
        return tuple(sample.options)

    def digest_fields(self, sample: McqSample) -> list:
        return [sample.index, sample.question, sample.hint, sample.options, sample.answer]

    def normalize_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        return normalize_columns(table)

    def score(self, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        return score_table(table)

    def extract_only(self, table: pd.DataFrame) -> pd.DataFrame:
        return extract_only(table)

    def tables(self, metrics: dict) -> list[ReportTable]:
        circular = metrics.get("circular")
        columns = (Column("accuracy", "accuracy"),) + ((Column("circular_accuracy", "CircularEval"),)
                                                      if circular else ())
        tables = []
        for key, name in GROUPINGS:
            rows = [(label, (acc,) + ((circular[key].get(label),) if circular else ()))
                    for label, acc in metrics["accuracy"][key].items()]
            tables.append(ReportTable(name=name, key=key, columns=columns, rows=rows,
                                      chart_title=f"Accuracy by {key} ({metrics['rows']} rows)"))
        return tables

    def primary(self, metrics: dict, benchmark: str) -> tuple[str, float | None]:
        if metrics.get("circular"):
            return "CircularEval", metrics["circular"]["overall"] * 100
        return "Overall", metrics["accuracy"]["overall"] * 100

    def headline(self, metrics: dict) -> list[str]:
        lines = []
        circular = metrics.get("circular")
        if circular:
            lines.append(f"Overall CircularEval: **{circular['overall'] * 100:.2f}%** "
                         f"over {circular['groups']} questions")
        lines.append(f"Overall accuracy: **{metrics['accuracy']['overall'] * 100:.2f}%** over {metrics['rows']} rows")
        return lines
