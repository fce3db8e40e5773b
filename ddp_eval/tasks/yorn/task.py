"""The yes/no task (MME, POPE, HallusionBench): question rows in, the dataset's prompt, VLMEvalKit's
`YOrN_Extraction` and each benchmark's own rating out (`tasks/yorn/scoring.py`)."""

from __future__ import annotations

import pandas as pd

from ddp_eval.core.tables import Column, ReportTable
from ddp_eval.data.rows import RawRows
from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.base import Content, Task, images_then_text
from ddp_eval.tasks.questions import QuestionSample, question_samples
from ddp_eval.tasks.yorn.prompt import dataset_prompt
from ddp_eval.tasks.yorn.scoring import NO, YES, YornRow, extract_yes_no, headline, metrics_for, row_hit

# The columns each rating reads besides index, question, answer and prediction.
NEEDS = {"MME": ["answer", "category", "image_path"], "POPE": ["answer", "category"],
         "HallusionBench": ["answer", "category", "l2-category"]}


# The headline numbers (`scoring.headline`): MME's sum of perception and reasoning, POPE's F1,
# HallusionBench's mean of aAcc, fAcc and qAcc, as the OpenVLM leaderboard quotes them.
PRIMARY = {"MME": "perception+reasoning", "POPE": "Overall F1", "HallusionBench": "Overall mean(aAcc,fAcc,qAcc)"}


class YesNoTask(Task):
    name = "yorn"
    prompt_kind = "yorn"
    benchmarks = tuple(NEEDS)

    def samples(self, rows: RawRows, benchmark: str) -> list[QuestionSample]:
        rules = self.rules(benchmark)
        samples = question_samples(rows, NEEDS[rules], f"{rules} (task yorn)")
        for sample, index in zip(samples, rows.table["index"]):
            if sample.answer is not None and sample.answer not in (YES, NO):
                raise DdpEvalError(f"{rows.source}: row index {index} has answer {sample.answer!r}; a yes/no "
                                   "benchmark's answers are Yes or No (is this file of another task?)")
        if rules == "HallusionBench":
            for index in rows.table["index"]:
                hallusion_ids(index, rows.source)
        return samples

    def content(self, sample: QuestionSample, benchmark: str) -> Content:
        return images_then_text(sample, dataset_prompt(sample.question, self.rules(benchmark)))

    def choices(self, sample: QuestionSample) -> tuple[str, ...]:
        return (YES, NO)

    def digest_fields(self, sample: QuestionSample) -> list:
        return [sample.index, sample.question, sample.answer]

    def score(self, table: pd.DataFrame, benchmark: str) -> tuple[pd.DataFrame, dict]:
        rules = self.rules(benchmark)
        self._check(table, benchmark, ["answer", *NEEDS[rules]])
        answers = set(table["answer"].astype(str))
        if not answers <= {YES, NO}:
            shown = ", ".join(sorted(answers)[:5])
            raise self.wrong_task(table, benchmark, f"its answers are not all Yes or No ({shown})")
        table = self.extract_only(table, benchmark)
        rows = [YornRow.from_record(r) for r in table.to_dict("records")]
        table["hit"] = [row_hit(r) for r in rows]
        return table, {"rows": len(rows), "scores": metrics_for(rules, rows)}

    def extract_only(self, table: pd.DataFrame, benchmark: str) -> pd.DataFrame:
        self.rules(benchmark)
        self._check(table, benchmark, [])
        table = table.copy()
        table["extracted"] = [extract_yes_no(p) for p in table["prediction"]]  # str(prediction), as VLMEvalKit
        return table

    def _check(self, table: pd.DataFrame, benchmark: str, needed: list[str]) -> None:
        missing = [c for c in ("index", "prediction", *needed) if c not in table.columns]
        if missing:
            raise self.wrong_task(table, benchmark, f"it has no {', '.join(missing)} column; found "
                                  f"{', '.join(map(str, table.columns))}")

    def tables(self, metrics: dict, benchmark: str) -> list[ReportTable]:
        rules, scores = self.rules(benchmark), metrics["scores"]
        if rules == "MME":
            columns = tuple(Column(k, k, percent=False) for k in ("acc", "acc+", "score"))
            by_category = [(name, (v["acc"], v["acc+"], v["score"])) for name, v in scores["category"].items()]
            return [
                ReportTable("scores_by_category", "category", columns, by_category),
                ReportTable("scores_by_group", "group", (Column("score", "score", percent=False),),
                            [(group, (scores[group],)) for group in ("perception", "reasoning")]),
            ]
        names = ("Overall", "acc", "precision", "recall") if rules == "POPE" else ("aAcc", "fAcc", "qAcc")
        labels = {"Overall": "F1", "acc": "accuracy"}
        columns = tuple(Column(k, labels.get(k, k)) for k in names)
        rows = [(split, tuple(v[k] / 100 for k in names)) for split, v in scores.items()]
        return [ReportTable("scores_by_split", "split", columns, rows,
                            chart_title=f"{rules} by split ({metrics['rows']} rows)")]

    def primary(self, metrics: dict, benchmark: str) -> tuple[str, float | None]:
        return headline(self.rules(benchmark), metrics["scores"])

    def primary_name(self, benchmark: str) -> str:
        return PRIMARY[self.rules(benchmark)]

    def headline(self, metrics: dict, benchmark: str) -> list[str]:
        rules, scores = self.rules(benchmark), metrics["scores"]
        name, value = self.primary(metrics, benchmark)
        lines = [f"{name}: **{value:.2f}** over {metrics['rows']} rows"]
        if rules == "MME":
            lines.append(f"perception: **{scores['perception']:.2f}** (of 2000), "
                         f"reasoning: **{scores['reasoning']:.2f}** (of 800)")
        else:
            lines.append("Overall " + ", ".join(f"{k}: **{v:.2f}**" for k, v in scores["Overall"].items()
                                                if k != "Overall" or rules != "POPE"))
        return lines


def hallusion_ids(index: object, source: str) -> None:
    """HallusionBench's fAcc and qAcc group rows by the set, figure and question ids of the string index."""
    if len(str(index).split("_")) < 6:
        raise DdpEvalError(f"{source}: row index {index!r} is not HallusionBench's "
                           "<category>_<l2>_<visual>_<set>_<figure>_<question>; use the TSV's indices unchanged")
