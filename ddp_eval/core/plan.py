"""Rows -> global batches -> per-rank assignment, and resume skipping. Pure: no torch, no I/O.

Batches are cut from all rows sorted by cost (largest first), independent of the world size, and
whole batches go to ranks round-robin. So a row always lands in the same batch with the same
neighbours, and its prediction is the same on 1 or N ranks. Rows of one group (rows showing the
same image, e.g. several questions about one picture) stay together in one batch unless the group alone is
larger than a batch, so the image is encoded once.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedBatch:
    batch_id: int
    indices: tuple[int, ...]


def plan_batches(costs: Mapping[int, int], batch_size: int, token_budget: int | None = None,
                 groups: Mapping[int, Hashable] | None = None) -> list[PlannedBatch]:
    """Sort rows by cost (descending) and cut them into batches, keeping each group's rows together.

    A batch takes at most `batch_size` rows and, with a `token_budget`, at most as many rows as keep
    rows x longest row (the padded size) within the budget; a row over the budget alone still runs.
    `groups` maps row -> group id (default: every row its own group); groups are ordered by their
    largest cost, then their smallest row index, and rows within a group by cost then index.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    members: dict[Hashable, list[int]] = {}
    for index in costs:
        members.setdefault(groups[index] if groups is not None else index, []).append(index)
    ordered = sorted(
        (sorted(rows, key=lambda i: (-costs[i], i)) for rows in members.values()),
        key=lambda rows: (-costs[rows[0]], min(rows)),
    )
    batches: list[list[int]] = []
    for rows in ordered:
        current = batches[-1] if batches else None
        if current is None or not _fits(current, rows, costs, batch_size, token_budget):
            current = []
            batches.append(current)
        for index in rows:  # a group larger than a batch continues in the next batch
            if current and not _fits(current, [index], costs, batch_size, token_budget):
                current = []
                batches.append(current)
            current.append(index)
    return [PlannedBatch(batch_id=b, indices=tuple(rows)) for b, rows in enumerate(batches)]


def _fits(batch: list[int], rows: list[int], costs: Mapping[int, int], batch_size: int,
          token_budget: int | None) -> bool:
    if not batch:
        return True
    size = len(batch) + len(rows)
    # The padded size of a batch is its longest row times its row count.
    longest = max(costs[batch[0]], max(costs[i] for i in rows))
    return size <= batch_size and (token_budget is None or longest * size <= token_budget)


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
