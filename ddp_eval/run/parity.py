"""The parity check on this rank: its share of the parity rows (core/parity.py) is kept as the batched
path predicts them, then each row is predicted again alone through the plain path: the family's
preprocessing without vision or prefix reuse (done by the loader's workers while the last batches run),
one row per call, the model's own `generate` (or its
plain forward for choice logits). Model-level kernels that compute the same values (packed vision
attention, key/value-head attention) stay installed; batching, padding, shared caches and the fast
decoder are what the check leaves out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from ddp_eval.core.parity import parity_rows
from ddp_eval.core.plan import PlannedBatch
from ddp_eval.run.loader import WorkItem

log = logging.getLogger(__name__)

CUDA_DEFAULT_ROWS = 16  # 0.3-0.4 s each at batch 1 on one H200 for a 2B model (bench/RESULTS.md, runs 26-27)


def parity_count(setting: int | None, device_type: str, greedy: bool) -> int:
    """run.parity_rows, or its default: 16 on CUDA, none on the CPU; none when sampling (no fixed reply)."""
    if not greedy:
        return 0
    if setting is not None:
        return setting
    return CUDA_DEFAULT_ROWS if device_type == "cuda" else 0


class ParityCheck:
    """This rank's parity rows: `work_items()` go to the loader after the batches (prepared on the plain
    path in its workers), `keep` records the batched predictions, `run` predicts the prepared rows alone."""

    def __init__(self, jobs: list, items: list[WorkItem], count: int) -> None:
        batch_of: dict[tuple[int, int], int] = {}
        for item in items:
            for index in item.batch.indices:
                batch_of[(item.part, index)] = item.batch.batch_id
        self.wanted = {k: {i for i in parity_rows(job.plan, count) if (k, i) in batch_of}
                       for k, job in enumerate(jobs)}
        self.order = sorted((k, i) for k, rows in self.wanted.items() for i in rows)
        self.batch_of = {key: batch_of[key] for key in self.order}
        self.batched: dict[tuple[int, int], tuple[int, str]] = {}  # (part, index) -> (batch id, prediction)

    def work_items(self) -> list[WorkItem]:
        """One item per parity row of this rank, in the order `run` expects them back."""
        return [WorkItem(k, PlannedBatch(self.batch_of[(k, i)], (i,)), alone=True) for k, i in self.order]

    def keep(self, part: int, batch_id: int, records: list[dict]) -> None:
        """Remember the batched predictions of the parity rows among `records` (failed rows are not checked)."""
        wanted = self.wanted.get(part)
        if not wanted:
            return
        for r in records:
            if r["index"] in wanted and not r.get("error"):
                self.batched[(part, r["index"])] = (batch_id, r["prediction"])

    def run(self, prepared_rows: Iterable, plain: list, names: list[str], backend, stop) -> dict[str, list[dict]]:
        """Predict each row of `prepared_rows` ((part, prepared) for `work_items()`, in order; `plain`: each
        part's plain preprocessor, to prepare a row again) alone where its batched prediction was kept;
        per benchmark name, [{"index", "same", "batched", "alone"}]."""
        start = time.perf_counter()
        results: dict[str, list[dict]] = {}
        for (k, index), (_, prepared) in zip(self.order, prepared_rows):
            if stop.signum is not None:
                break
            if (k, index) not in self.batched:
                continue
            batch_id, batched = self.batched[(k, index)]
            record = backend.predict(prepared, lambda rows, p=plain[k], b=batch_id: p(b, rows))[0]
            alone = record.get("prediction", "") if not record.get("error") else None
            results.setdefault(names[k], []).append({"index": index, "same": alone == batched, "batched": batched,
                                                      "alone": alone})
        if results:
            log.info("parity: %d rows predicted alone in %.1f s", sum(map(len, results.values())),
                     time.perf_counter() - start)
        return results
