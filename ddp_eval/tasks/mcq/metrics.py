"""Accuracy overall / per category / per l2-category, and MMBench's CircularEval (pure).

Circular variants carry index >= 1,000,000; their group is index mod 1,000,000 (or an explicit
g_index). A group counts as right only if every variant in it is right; groups are reported under
their original row's category, as VLMEvalKit does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

CIRCULAR_OFFSET = 1_000_000


@dataclass(frozen=True)
class ScoredRow:
    index: int
    category: str | None
    l2_category: str | None
    hit: bool
    group: int | None = None  # circular group; None means index mod 1e6


def group_of(row: ScoredRow) -> int:
    """The original question a row asks: its g_index, else index mod 1e6 for a copy (index >= 1e6)."""
    if row.group is not None:
        return row.group
    return row.index % CIRCULAR_OFFSET if row.index >= CIRCULAR_OFFSET else row.index


def has_circular(rows: Iterable[ScoredRow]) -> bool:
    """Whether any row is a circular copy of another (a negative or small index never is)."""
    return any(group_of(r) != r.index for r in rows)


def accuracy(rows: list[ScoredRow]) -> dict:
    """{'overall', 'n', 'category': {name: acc}, 'l2-category': {name: acc}} with names sorted."""
    return {
        "overall": _mean(r.hit for r in rows),
        "n": len(rows),
        "category": _by(rows, lambda r: r.category),
        "l2-category": _by(rows, lambda r: r.l2_category),
    }


def circular_rows(rows: list[ScoredRow]) -> list[ScoredRow]:
    """One row per group (the original question), hit only if all of the group's rows hit."""
    all_hit: dict[int, bool] = defaultdict(lambda: True)
    for r in rows:
        all_hit[group_of(r)] &= r.hit
    return [
        ScoredRow(r.index, r.category, r.l2_category, all_hit[r.index], r.group)
        for r in rows if group_of(r) == r.index
    ]


def _by(rows: list[ScoredRow], key) -> dict[str, float]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        name = key(r)
        if name is not None:
            groups[name].append(r.hit)
    return {name: _mean(groups[name]) for name in sorted(groups)}


def _mean(values: Iterable[bool]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
