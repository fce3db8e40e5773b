"""The multiple-choice task: MCQ rows in, VLMEvalKit's prompt, `can_infer` extraction, accuracy per
split and category, and CircularEval (where circular copies exist) out."""

from __future__ import annotations

import pandas as pd

from ddp_eval.core.tables import Column, ReportTable
from ddp_eval.data.rows import RawRows
from ddp_eval.tasks.base import Content, Task, images_then_text
from ddp_eval.tasks.mcq.metrics import MMMU_DATASETS, primary_metric
from ddp_eval.tasks.mcq.prompt import default_prompt, split_mmmu
from ddp_eval.tasks.mcq.rows import McqSample, samples_from_table
from ddp_eval.tasks.mcq.score import extract_only, is_mmmu, normalize_columns, score_table

GROUPINGS = (("l2-category", "accuracy_by_l2_category"), ("category", "accuracy_by_category"))
MMBENCH = tuple(f"MMBench_{split}_{lang}{version}" for version in ("", "_V11") for split in ("DEV", "TEST")
                for lang in ("EN", "CN"))
BENCHMARKS = (*MMBENCH, "MMStar", "SEEDBench_IMG", "AI2D_TEST", "ScienceQA_TEST", "RealWorldQA", "MMMU_DEV_VAL")


class MultipleChoiceTask(Task):
    name = "mcq"
    prompt_kind = "mcq"
    benchmarks = BENCHMARKS
    fallback_rules = ""  # any other multiple-choice file is scored as MMBench is (CircularEval where copies exist)

    def samples(self, rows: RawRows, benchmark: str) -> list[McqSample]:
        # An answer outside the options is refused for MMBench and unknown files (a sign of a broken file);
        # the other published sets are read as VLMEvalKit reads them (such a row scores as wrong; MMMU's
        # open questions are answered in text).
        check = self.rules(benchmark) in ("", *MMBENCH) and not is_mmmu(benchmark)
        return samples_from_table(rows.table, rows.image_keys, rows.source, check_answers=check)

    def content(self, sample: McqSample, benchmark: str) -> Content:
        content = images_then_text(sample, default_prompt(sample))
        if self.rules(benchmark) in MMMU_DATASETS:
            return split_mmmu(content, f"{benchmark}, row index {sample.index}")
        return content

    def choices(self, sample: McqSample) -> tuple[str, ...]:
        return tuple(sample.options)

    def digest_fields(self, sample: McqSample) -> list:
        return [sample.index, sample.question, sample.hint, sample.options, sample.answer]

    def normalize_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        return normalize_columns(table)

    def score(self, table: pd.DataFrame, benchmark: str = "") -> tuple[pd.DataFrame, dict]:
        self._check(table, benchmark)
        return score_table(table, benchmark)

    def extract_only(self, table: pd.DataFrame, benchmark: str = "") -> pd.DataFrame:
        self._check(table, benchmark)
        return extract_only(table, benchmark)

    def _check(self, table: pd.DataFrame, benchmark: str) -> None:
        missing = [c for c in ("index", "prediction") if c not in table.columns]
        if missing:
            raise self.wrong_task(table, benchmark, f"the table has no {', '.join(missing)} column; found "
                                  f"{', '.join(map(str, table.columns))}")
        if "A" not in table.columns:
            raise self.wrong_task(table, benchmark, "it has no option columns A, B, ...")

    def tables(self, metrics: dict, benchmark: str = "") -> list[ReportTable]:
        circular = metrics.get("circular")
        splits = metrics.get("splits", {})
        columns = ((Column("accuracy", "accuracy"),)
                   + ((Column("circular_accuracy", "CircularEval"),) if circular else ())
                   + tuple(Column(f"accuracy_{s}", s) for s in splits))
        tables = []
        for key, name in GROUPINGS:
            rows = [(label, (acc,) + ((circular[key].get(label),) if circular else ())
                     + tuple(splits[s][key].get(label) for s in splits))
                    for label, acc in metrics["accuracy"][key].items()]
            tables.append(ReportTable(name=name, key=key, columns=columns, rows=rows,
                                      chart_title=f"Accuracy by {key} ({metrics['rows']} rows)"))
        if splits:
            by_split = [(s, (acc["overall"],)) for s, acc in splits.items()]
            tables.insert(0, ReportTable("accuracy_by_split", "split", (Column("accuracy", "accuracy"),), by_split,
                                         chart_title=f"Accuracy by split ({metrics['rows']} rows)"))
        return tables

    def primary(self, metrics: dict, benchmark: str) -> tuple[str, float | None]:
        if metrics.get("circular"):
            return "CircularEval", metrics["circular"]["overall"] * 100
        if metrics.get("report_acc"):
            return primary_metric(metrics["report_acc"], self.rules(benchmark))
        return "Overall Acc", metrics["accuracy"]["overall"] * 100

    def primary_name(self, benchmark: str) -> str:
        rules = self.rules(benchmark)
        return "CircularEval" if rules in MMBENCH else "Overall Acc (val)" if rules == "MMMU_DEV_VAL" else "Overall Acc"

    def headline(self, metrics: dict, benchmark: str = "") -> list[str]:
        lines = []
        circular = metrics.get("circular")
        if circular:
            lines.append(f"Overall CircularEval: **{circular['overall'] * 100:.2f}%** "
                         f"over {circular['groups']} questions")
        else:
            name, value = self.primary(metrics, benchmark)
            lines.append(f"{name}: **{value:.2f}%**")
        for split, acc in metrics.get("splits", {}).items():
            lines.append(f"{split}: **{acc['overall'] * 100:.2f}%** over {acc['n']} rows")
        lines.append(f"Overall accuracy: **{metrics['accuracy']['overall'] * 100:.2f}%** over {metrics['rows']} rows")
        return lines
