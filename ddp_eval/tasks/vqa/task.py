"""The short-answer task (TextVQA_VAL, DocVQA_VAL, ChartQA_TEST, OCRBench): question rows in, the
dataset's prompt, and VLMEvalKit's rule per benchmark (VQA accuracy, ANLS, relaxed accuracy, OCRBench's
substring counts) out (`tasks/vqa/scoring.py`)."""

from __future__ import annotations

import pandas as pd

from ddp_eval.core.tables import Column, ReportTable
from ddp_eval.data.rows import RawRows
from ddp_eval.tasks.base import Content, Task, images_then_text
from ddp_eval.tasks.questions import QuestionSample, question_samples
from ddp_eval.tasks.vqa.prompt import dataset_prompt
from ddp_eval.tasks.vqa.scoring import HEADLINE_METRIC, OCRBENCH_GROUPS, benchmark_metrics, row_hit, scored_prediction

# The columns each rule reads besides index, question and prediction.
NEEDS = {"TextVQA_VAL": ["answer"], "DocVQA_VAL": ["answer"], "ChartQA_TEST": ["answer"],
         "OCRBench": ["answer", "category"]}
RULE_NAMES = {"TextVQA_VAL": "VQA accuracy", "DocVQA_VAL": "ANLS", "ChartQA_TEST": "relaxed accuracy"}


class ShortAnswerTask(Task):
    name = "vqa"
    prompt_kind = "vqa"
    benchmarks = tuple(NEEDS)

    def samples(self, rows: RawRows, benchmark: str) -> list[QuestionSample]:
        rules = self.rules(benchmark)
        return question_samples(rows, NEEDS[rules], f"{rules} (task vqa)")

    def content(self, sample: QuestionSample, benchmark: str) -> Content:
        return images_then_text(sample, dataset_prompt(sample.question, self.rules(benchmark)))

    def digest_fields(self, sample: QuestionSample) -> list:
        return [sample.index, sample.question, sample.answer]

    def score(self, table: pd.DataFrame, benchmark: str) -> tuple[pd.DataFrame, dict]:
        rules = self.rules(benchmark)
        self._check(table, benchmark, NEEDS[rules])
        table = self.extract_only(table, benchmark)
        categories = [str(c) for c in table["category"]] if "category" in table.columns else None
        table["hit"] = [row_hit(rules, p, a, c) for p, a, c in
                        zip(table["prediction"], table["answer"], categories or [None] * len(table))]
        splits = [str(s) for s in table["split"]] if "split" in table.columns else None
        scores = benchmark_metrics(rules, list(table["hit"]), splits, categories)
        by = None if rules == "OCRBench" else "split" if splits else "category" if categories else None
        return table, {"rows": len(table), "scores": scores, "by": by}

    def extract_only(self, table: pd.DataFrame, benchmark: str) -> pd.DataFrame:
        rules = self.rules(benchmark)
        self._check(table, benchmark, [])
        table = table.copy()
        categories = table["category"] if "category" in table.columns else [None] * len(table)
        table["extracted"] = [scored_prediction(rules, p, None if pd.isna(c) else str(c))
                              for p, c in zip(table["prediction"], categories)]
        return table

    def _check(self, table: pd.DataFrame, benchmark: str, needed: list[str]) -> None:
        missing = [c for c in ("index", "prediction", *needed) if c not in table.columns]
        if missing:
            raise self.wrong_task(table, benchmark, f"it has no {', '.join(missing)} column; found "
                                  f"{', '.join(map(str, table.columns))}")
        answers = {str(a).strip() for a in table["answer"].dropna()} if "answer" in table.columns else set()
        letters = answers and all(len(a) == 1 and a.isupper() for a in answers)
        if letters and {"A", "B"} <= {str(c).upper() for c in table.columns}:
            raise self.wrong_task(table, benchmark, "its answers are option letters of option columns A, B, ...")

    def tables(self, metrics: dict, benchmark: str) -> list[ReportTable]:
        rules, scores = self.rules(benchmark), metrics["scores"]
        if rules == "OCRBench":
            names = [*OCRBENCH_GROUPS, "Final Score"]
            return [ReportTable("counts_by_group", "group", (Column("right", "right answers", percent=False),),
                                [(name, (scores[name],)) for name in names])]
        key = metrics.get("by")
        if key is None:
            return []
        return [ReportTable(f"accuracy_by_{key}", key, (Column("accuracy", RULE_NAMES[rules]),),
                            [(name, (value / 100,)) for name, value in scores.items()],
                            chart_title=f"{benchmark}: {RULE_NAMES[rules]} by {key} ({metrics['rows']} rows)")]

    def primary(self, metrics: dict, benchmark: str) -> tuple[str, float | None]:
        name = HEADLINE_METRIC[self.rules(benchmark)]
        return name, metrics["scores"][name]

    def primary_name(self, benchmark: str) -> str:
        return HEADLINE_METRIC[self.rules(benchmark)]

    def headline(self, metrics: dict, benchmark: str) -> list[str]:
        rules, scores = self.rules(benchmark), metrics["scores"]
        if rules == "OCRBench":
            return [f"Final Score: **{scores['Final Score']}** right of {metrics['rows']} rows (of 1000 on the full "
                    f"OCRBench), Final Score Norm {scores['Final Score Norm']:.1f}"]
        return [f"Overall: **{scores['Overall']:.2f}** ({RULE_NAMES[rules]}, in percent) over {metrics['rows']} rows"]
