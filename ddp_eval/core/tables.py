"""The tables a task reports (per category, per split, ...), as plain values for the report writers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    key: str  # the CSV header
    label: str  # the header in report.md and the legend of a chart
    percent: bool = True  # a fraction in [0, 1]: shown as a percentage in report.md and charts


@dataclass(frozen=True)
class ReportTable:
    name: str  # file stem of its CSV (and PNG chart), e.g. accuracy_by_category
    key: str  # what a row names, e.g. category
    columns: tuple[Column, ...]
    rows: list[tuple[str, tuple[float | None, ...]]] = field(default_factory=list)
    chart_title: str | None = None  # None: no chart
