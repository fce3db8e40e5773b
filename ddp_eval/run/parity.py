"""The parity check on this rank: its share of the parity rows (core/parity.py) is kept as the batched
path predicts them, then each row is predicted again alone through the plain path: the family's
preprocessing without vision or prefix reuse, one row per call, the model's own `generate` (or its
plain forward for choice logits). Model-level kernels that compute the same values (packed vision
attention, key/value-head attention) stay installed; batching, padding, shared caches and the fast
decoder are what the check leaves out.
"""

from __future__ import annotations

import logging
import time

from ddp_eval.core.parity import parity_rows
from ddp_eval.models.base import Speed

log = logging.getLogger(__name__)

CUDA_DEFAULT_ROWS = 16  # ~0.25 s each at batch 1 on one H200 for a 2B model (bench/RESULTS.md, run 23)


def parity_count(setting: int | None, device_type: str, greedy: bool) -> int:
    """run.parity_rows, or its default: 16 on CUDA, none on the CPU; none when sampling (no fixed reply)."""
    if not greedy:
        return 0
    if setting is not None:
        return setting
    return CUDA_DEFAULT_ROWS if device_type == "cuda" else 0


class ParityCheck:
    def __init__(self, jobs: list, items: list, count: int) -> None:
        mine: dict[int, set[int]] = {}
        for item in items:
            mine.setdefault(item.part, set()).update(item.batch.indices)
        self.wanted = {k: parity_rows(job.plan, count) & mine.get(k, set()) for k, job in enumerate(jobs)}
        self.batched: dict[tuple[int, int], tuple[int, str]] = {}  # (part, index) -> (batch id, prediction)

    def keep(self, part: int, batch_id: int, records: list[dict]) -> None:
        """Remember the batched predictions of the parity rows among `records` (failed rows are not checked)."""
        wanted = self.wanted.get(part)
        if not wanted:
            return
        for r in records:
            if r["index"] in wanted and not r.get("error"):
                self.batched[(part, r["index"])] = (batch_id, r["prediction"])

    def run(self, jobs: list, names: list[str], processors: dict, backend, stop) -> dict[str, list[dict]]:
        """Predict every kept row alone; per benchmark name, [{"index", "same", "batched", "alone"}]."""
        if not self.batched:
            return {}
        start = time.perf_counter()
        plain = {}
        results: dict[str, list[dict]] = {}
        for (k, index), (batch_id, batched) in sorted(self.batched.items()):
            if stop.signum is not None:
                break
            job = jobs[k]
            if k not in plain:
                plain[k] = job.family.preprocessor(processors[job.pixels], job.benchmark, job.task, Speed(),
                                                   job.pixels)
            prepare = plain[k]
            record = backend.predict(prepare(batch_id, (index,)), lambda rows, p=prepare, b=batch_id: p(b, rows))[0]
            alone = record.get("prediction", "") if not record.get("error") else None
            results.setdefault(names[k], []).append({"index": index, "same": alone == batched, "batched": batched,
                                                      "alone": alone})
        log.info("parity: %d rows predicted alone in %.1f s", sum(map(len, results.values())),
                 time.perf_counter() - start)
        return results
