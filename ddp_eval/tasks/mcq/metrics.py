"""Accuracy overall / per category / per l2-category, MMBench's CircularEval, and VLMEvalKit's
`report_acc` table and primary metric (pure).

Circular variants carry index >= 1,000,000; their group is index mod 1,000,000 (or an explicit
g_index). A group counts as right only if every variant in it is right; groups are reported under
their original row's category, as VLMEvalKit does.

`report_acc` is VLMEvalKit's table: one row per split ("none" without a split column; MMMU_DEV_VAL has
dev and validation), columns Overall, each l2-category (MMBench's abbreviated: CP, FP-S, ...), each
category, as fractions; on the circular groups where there are copies. The primary metric is read
from it as `report_primary_metric` does: "Overall Acc (val)" for MMMU, "Overall Acc" without splits,
else the generic pick of ImageBaseDataset.
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
    split: str | None = None  # the split column's value (None: the file has no split column)


def group_of(row: ScoredRow) -> int:
    """The original question a row asks: its g_index, else index mod 1e6 for a copy (index >= 1e6)."""
    if row.group is not None:
        return row.group
    return row.index % CIRCULAR_OFFSET if row.index >= CIRCULAR_OFFSET else row.index


def has_circular(rows: Iterable[ScoredRow]) -> bool:
    """Whether any row is a circular copy of another row present (a negative or small index never is)."""
    rows = list(rows)
    present = {r.index for r in rows}
    return any(group_of(r) != r.index and group_of(r) in present for r in rows)


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
        ScoredRow(r.index, r.category, r.l2_category, all_hit[r.index], r.group, r.split)
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


MMB_ABBRS = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}
NO_SPLIT = "none"
MMMU_DATASETS = ("MMMU_DEV_VAL", "MMMU_TEST")  # VLMEvalKit's MMMUDataset: its own primary metric names


def report_acc(rows: list[ScoredRow]) -> dict[str, dict[str, float]]:
    """{split: {"Overall": acc, l2-category or category name: acc, ...}}, splits sorted (VLMEvalKit lists
    them in set order), names sorted within each grouping, l2-categories first."""
    table: dict[str, dict[str, float]] = {}
    for split in sorted({r.split if r.split is not None else NO_SPLIT for r in rows}):
        mine = [r for r in rows if (r.split if r.split is not None else NO_SPLIT) == split]
        columns = {"Overall": _mean(r.hit for r in mine)}
        for key in (lambda r: r.l2_category, lambda r: r.category):
            for name in sorted({key(r) for r in rows if key(r) is not None}):
                columns[MMB_ABBRS.get(name, name)] = _mean(r.hit for r in mine if key(r) == name)
        table[split] = columns
    return table


def primary_metric(report: dict[str, dict[str, float]], benchmark: str) -> tuple[str, float]:
    """(name, value in percent) as VLMEvalKit's `report_primary_metric` reads the flattened report."""
    flat = {f"split={split}|{name}": value for split, columns in report.items() for name, value in columns.items()}
    if benchmark in MMMU_DATASETS:
        for split, name in (("test", "Overall Acc (test)"), ("validation", "Overall Acc (val)")):
            if f"split={split}|Overall" in flat:
                return name, flat[f"split={split}|Overall"] * 100
    if f"split={NO_SPLIT}|Overall" in flat:
        return "Overall Acc", flat[f"split={NO_SPLIT}|Overall"] * 100
    key = choose_primary_key(flat)
    return key, flat[key] * 100


def choose_primary_key(flat: dict[str, float]) -> str:
    """ImageBaseDataset's fallback: the key most like an overall accuracy, test before validation before dev."""
    def rank(key: str) -> tuple[int, str]:
        low = key.lower()
        score = next((points for test, points in (
            (low == "overall", 100), (low.endswith("|overall"), 95), ("overall" in low, 90),
            (low == "acc" or low.endswith("|acc"), 80), ("acc" in low, 70),
            (low == "score" or low.endswith("|score"), 60), ("score" in low, 50)) if test), 0)
        score += next((points for tag, points in (("split=test", 4), ("split=validation", 3), ("split=val", 2),
                                                  ("split=dev", 1)) if tag in low), 0)
        return -score, key

    return min(flat, key=rank)
