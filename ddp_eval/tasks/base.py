"""What a benchmark family brings: its rows, its prompt, its settings, its scoring and its report tables.

A task never imports a model, a backend or torch. Its prompt is model-agnostic content (images and
text in order); a model family turns it into inputs, or builds its own prompt where VLMEvalKit's
wrapper for that family does (`models.base.ModelFamily.content`). Scoring works on pandas tables of
predictions, whether they came from a run or from a VLMEvalKit file.

Which rules apply depends on the benchmark (MME, POPE and HallusionBench are all yes/no, each scored its
own way), so prompts, scoring and reports get the benchmark's name. A local file is named by its file
stem: it follows the rules of the longest known benchmark name it contains, as VLMEvalKit picks a
prediction file's dataset by its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ddp_eval.core.sample import Sample
from ddp_eval.core.tables import ReportTable
from ddp_eval.data.rows import RawRows
from ddp_eval.errors import DdpEvalError

Content = list[dict[str, Any]]  # [{"type": "image", "image": key}, {"type": "text", "text": "..."}]


def image_item(key: Hashable) -> dict[str, Any]:
    return {"type": "image", "image": key}


def text_item(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def images_then_text(sample: Sample, text: str) -> Content:
    """VLMEvalKit's usual message: the row's images in file order, then one text."""
    return [*(image_item(k) for k in sample.image_keys), text_item(text)]


def prompt_text(content: Content) -> str:
    """All text of a prompt, in order (images left out)."""
    return "".join(item["text"] for item in content if item["type"] == "text")


@dataclass(frozen=True)
class TaskSettings:
    """What a benchmark asks of generation and preprocessing; None leaves the config's value."""

    max_new_tokens: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None


def known_within(name: str, known: Iterable[str]) -> str | None:
    """`name` if it is known, else the longest known name it contains ("MyModel_MMBench_DEV_EN_V11.xlsx"
    -> MMBench_DEV_EN_V11), else None. Case-sensitive, as VLMEvalKit matches dataset names."""
    known = list(known)
    if name in known:
        return name
    inside = [k for k in known if k in name]
    return max(inside, key=len) if inside else None


def answers_look_like(table: pd.DataFrame) -> str:
    """Which task a predictions table's answers suggest, for the error of a file scored by the wrong one."""
    answers = {str(a).strip() for a in table["answer"].dropna()} if "answer" in table.columns else set()
    if answers and answers <= {"Yes", "No"}:
        return "yes/no answers (task yorn: MME, POPE, HallusionBench)"
    columns = {str(c).upper() for c in table.columns}  # a yes/no or short-answer table has them lower-cased
    if answers and all(len(a) == 1 and a.isupper() for a in answers) and {"A", "B"} <= columns:
        return "option letters with option columns A, B, ... (task mcq)"
    return "free-text answers (task vqa: TextVQA_VAL, DocVQA_VAL, ChartQA_TEST, OCRBench)"


class Task(ABC):
    name: str  # the registry key (data.task)
    prompt_kind: str  # "mcq", "yorn", "vqa": which custom prompt a model family may build instead
    benchmarks: tuple[str, ...] = ()  # the benchmark names whose rules the task knows
    # The rules for a name it does not know: None makes that an error naming the known ones.
    fallback_rules: str | None = None

    def rules(self, benchmark: str) -> str:
        """The known benchmark whose rules apply to `benchmark` (its name or a file stem containing it)."""
        known = known_within(benchmark.replace("\\", "/").rsplit("/", 1)[-1], self.benchmarks)  # a path: its file
        if known is not None:
            return known
        if self.fallback_rules is not None:
            return self.fallback_rules
        raise DdpEvalError(f"benchmark {benchmark!r}: the {self.name} task scores and prompts by the benchmark's own "
                           f"rules, known for {', '.join(self.benchmarks)}; use one of these names (a local file: a "
                           "file name containing one, e.g. my_POPE.tsv)")

    @abstractmethod
    def samples(self, rows: RawRows, benchmark: str) -> list[Sample]:
        """The task's samples from a file's rows; errors name the file, the row and the column."""

    @abstractmethod
    def content(self, sample: Sample, benchmark: str) -> Content:
        """The benchmark's own prompt for a row, as VLMEvalKit's dataset class builds it."""

    def choices(self, sample: Sample) -> tuple[str, ...]:
        """The labels generation.mode=choice_logits picks from (none: the mode does not apply)."""
        return ()

    @abstractmethod
    def digest_fields(self, sample: Sample) -> list[Any]:
        """What of a row changes its prediction (run identity: shards of other contents are refused)."""

    def settings(self, benchmark: str) -> TaskSettings:
        return TaskSettings()

    @abstractmethod
    def score(self, table: pd.DataFrame, benchmark: str) -> tuple[pd.DataFrame, dict]:
        """The table with `extracted` (the answer as scored) and `hit` (in [0, 1]) added, and the metrics
        under VLMEvalKit's names (pure)."""

    @abstractmethod
    def extract_only(self, table: pd.DataFrame, benchmark: str) -> pd.DataFrame:
        """For a split without answers: the extracted answers, no hits."""

    @abstractmethod
    def tables(self, metrics: dict, benchmark: str) -> list[ReportTable]:
        """The report's tables (CSV, report.md, charts), per category / split as VLMEvalKit reports them."""

    @abstractmethod
    def primary(self, metrics: dict, benchmark: str) -> tuple[str, float | None]:
        """The benchmark's headline metric as VLMEvalKit reports it: (its name, its value, in percent or
        the benchmark's own unit), for the suite summary."""

    def primary_name(self, benchmark: str) -> str:
        """The name `primary` gives the benchmark's headline metric (for `ddp_eval benchmarks`)."""
        return ""

    @abstractmethod
    def headline(self, metrics: dict, benchmark: str) -> list[str]:
        """The headline numbers as short markdown lines (bold values), the primary metric first."""

    def normalize_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        """Column names as VLMEvalKit's evaluation reads them (lower case)."""
        return table.rename(columns={c: str(c).lower() for c in table.columns})

    def wrong_task(self, table: pd.DataFrame, benchmark: str, why: str) -> DdpEvalError:
        return DdpEvalError(f"{benchmark or 'predictions'}: cannot score with the {self.name} task: {why}; the file "
                            f"holds {answers_look_like(table)}; pass --benchmark NAME (or --task) of that kind")

    def answer_status(self, table: pd.DataFrame) -> str:
        """'all' rows have an answer, 'none' do (a TEST split), or an error naming the mixed rows."""
        if "answer" not in table.columns:
            return "none"
        missing = table["answer"].isna()
        if missing.all():
            return "none"
        if missing.any():
            rows = ", ".join(str(i) for i in table.loc[missing, "index"].head(20))
            raise DdpEvalError(
                f"{int(missing.sum())} of {len(table)} rows have no answer (index {rows}); a file must have "
                "answers for every row (a dev split) or for none (a test split)"
            )
        return "all"
