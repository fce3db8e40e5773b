"""The parity check: a few rows predicted again, alone, through the model's own `generate`, compared with
what the fast batched path recorded for them. Pure: which rows, and what the comparison found.

Batching bugs (padding, caches shared between rows, patched kernels) change predictions silently; a
run that reports its agreement with the plain batch-1 path shows that they did not. The rows are
spread evenly over the global plan (which is sorted by cost), so short and long prompts are both
checked, and the choice does not depend on the world size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ddp_eval.core.plan import PlannedBatch

SHOWN = 20  # differing indices listed in metrics.json and the report


def parity_rows(plan: Sequence[PlannedBatch], count: int) -> frozenset[int]:
    """`count` row indices spread evenly over the plan's order (all rows if it has fewer)."""
    rows = [i for batch in plan for i in batch.indices]
    if count <= 0 or not rows:
        return frozenset()
    if count >= len(rows):
        return frozenset(rows)
    step = len(rows) / count
    return frozenset(rows[int(k * step)] for k in range(count))


def summarize(checks: Iterable[dict], min_agreement: float) -> dict | None:
    """{"rows", "same", "agreement", "min_agreement", "ok", "differing"} over the checked rows (one per index);
    None when no row was checked."""
    by_index = {}
    for check in checks:
        by_index.setdefault(check["index"], check)
    if not by_index:
        return None
    same = sum(1 for c in by_index.values() if c["same"])
    agreement = same / len(by_index)
    differing = sorted(i for i, c in by_index.items() if not c["same"])
    return {"rows": len(by_index), "same": same, "agreement": agreement, "min_agreement": min_agreement,
            "ok": agreement >= min_agreement, "differing": differing[:SHOWN]}


def describe(summary: dict) -> str:
    """One line for the log and the report."""
    text = (f"parity: {summary['same']}/{summary['rows']} rows predicted alone through the model's own generate "
            f"match the batched predictions ({summary['agreement']:.0%})")
    if summary["differing"]:
        text += "; differing rows: " + ", ".join(str(i) for i in summary["differing"])
    return text
