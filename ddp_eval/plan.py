"""Rows -> global batches -> per-rank assignment, and resume skipping. Pure: no torch, no I/O.

Batches are cut from all rows sorted by cost (largest first), independent of the world size, and
whole batches go to ranks round-robin. So a row always lands in the same batch with the same
neighbours, and its prediction is the same on 1 or N ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedBatch:
    batch_id: int
    indices: tuple[int, ...]


def plan_batches(costs: Mapping[int, int], batch_size: int, token_budget: int | None = None) -> list[PlannedBatch]:
    """Sort rows by cost (descending, ties by index) and cut them into batches.

    A batch takes at most `batch_size` rows and, with a `token_budget`, at most as many rows as keep
    rows x longest row (the padded size) within the budget; a row over the budget alone still runs.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    order = sorted(costs, key=lambda index: (-costs[index], index))
    groups: list[list[int]] = []
    for index in order:
        group = groups[-1] if groups else None
        # Rows come longest first, so a batch's padded size is its first row's cost times its length.
        fits = group is not None and len(group) < batch_size and (
            token_budget is None or costs[group[0]] * (len(group) + 1) <= token_budget
        )
        if fits:
            group.append(index)
        else:
            groups.append([index])
    return [PlannedBatch(batch_id=b, indices=tuple(g)) for b, g in enumerate(groups)]


def batches_for_rank(batches: list[PlannedBatch], rank: int, world_size: int) -> list[PlannedBatch]:
    """Whole batches, round-robin: batch b goes to rank b % world_size."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return [b for b in batches if b.batch_id % world_size == rank]


def skip_done(batches: Iterable[PlannedBatch], done: set[int]) -> list[PlannedBatch]:
    """Drop rows already predicted; drop batches left empty."""
    left = []
    for batch in batches:
        todo = tuple(i for i in batch.indices if i not in done)
        if todo:
            left.append(PlannedBatch(batch_id=batch.batch_id, indices=todo))
    return left
