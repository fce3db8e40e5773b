"""What a benchmark family brings: its rows, its prompt, its settings, its scoring and its report tables.

A task never imports a model, a backend or torch. Its prompt is model-agnostic content (images and
text in order); a model family turns it into inputs, or builds its own prompt where VLMEvalKit's
wrapper for that family does (`models.base.ModelFamily.messages`). Scoring works on pandas tables of
predictions, whether they came from a run or from a VLMEvalKit file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ddp_eval.core.sample import Sample
from ddp_eval.core.tables import ReportTable
from ddp_eval.data.rows import RawRows
from ddp_eval.errors import DdpEvalError

Content = list[dict[str, Any]]  # [{"type": "image", "image": key}, {"type": "text", "text": "..."}]


def image_item(key: int) -> dict[str, Any]:
    return {"type": "image", "image": key}


def text_item(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def prompt_text(content: Content) -> str:
    """All text of a prompt, in order (images left out)."""
    return "".join(item["text"] for item in content if item["type"] == "text")


@dataclass(frozen=True)
class TaskSettings:
    """What a benchmark asks of generation and preprocessing; None leaves the config's value."""

    max_new_tokens: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None


class Task(ABC):
    name: str  # the registry key (data.task)
    prompt_kind: str  # "mcq", "yorn", "vqa": which custom prompt a model family may build instead

    @abstractmethod
    def samples(self, rows: RawRows) -> list[Sample]:
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
    def score(self, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """The table with `extracted` and `hit` added, and the metrics (pure)."""

    @abstractmethod
    def extract_only(self, table: pd.DataFrame) -> pd.DataFrame:
        """For a split without answers: the extracted answers, no hits."""

    @abstractmethod
    def tables(self, metrics: dict) -> list[ReportTable]:
        """The report's tables (CSV, report.md, charts)."""

    @abstractmethod
    def headline(self, metrics: dict) -> list[str]:
        """The headline numbers as short markdown lines (bold values), most important first."""

    def primary(self, metrics: dict, benchmark: str) -> tuple[str, float | None]:
        """The benchmark's headline metric as VLMEvalKit reports it: (its name, its value, in percent or
        the benchmark's own unit), for the suite summary."""
        return "", None

    def normalize_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        """Column names as VLMEvalKit's evaluation reads them (lower case)."""
        return table.rename(columns={c: str(c).lower() for c in table.columns})

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
