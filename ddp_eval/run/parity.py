"""The parity check on this rank: its share of the parity rows (core/parity.py) is kept as the batched
path predicts them, then each row is predicted again alone through the plain path: the family's
preprocessing without vision or prefix reuse (done by the loader's workers while the last batches run),
one row per call, the model's own `generate` (or its
plain forward for choice logits). Model-level kernels that compute the same values (packed vision
attention, key/value-head attention) stay installed; batching, padding, shared caches and the fast
decoder are what the check leaves out.

A batch-1 `generate` is mostly host time (launching kernels), so where the family makes its model's
per-call state per thread (`ModelFamily.thread_state`) the rows are predicted in a second thread, on a
CUDA stream of their own, while the loop runs the batches ("alongside"); otherwise after the last batch.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time

from ddp_eval.core.batch import PreparedBatch
from ddp_eval.core.parity import parity_rows
from ddp_eval.core.plan import PlannedBatch
from ddp_eval.errors import DdpEvalError
from ddp_eval.run.loader import WorkItem

log = logging.getLogger(__name__)

# While the parity thread runs, a thread waiting for the interpreter lock gets it after this long (Python's
# default: 5 ms). The loop's thread waits for the lock after each wait for the GPU; at 5 ms a wait, the
# parity thread cost the loop 7% of its rate on the H200 machine (bench/RESULTS.md, run 31).
SWITCH_INTERVAL_S = 0.0005
CUDA_DEFAULT_ROWS = 16  # 0.3-0.4 s each at batch 1 on one H200 for a 2B model (bench/RESULTS.md, runs 26-27)


def parity_count(setting: int | None, device_type: str, greedy: bool) -> int:
    """run.parity_rows, or its default: 16 on CUDA, none on the CPU; none when sampling (no fixed reply)."""
    if not greedy:
        return 0
    if setting is not None:
        return setting
    return CUDA_DEFAULT_ROWS if device_type == "cuda" else 0


def alongside_planned(setting: bool | None, device_type: str, family, compile_vision: bool) -> bool:
    """Whether the parity rows are meant to run beside the batches (run.parity_alongside; null: on CUDA where
    the family names its per-call state and nothing is compiled). An explicit true the family cannot take
    is an error naming the key."""
    if setting is False:
        return False
    if family.thread_state is None:
        if setting:
            raise DdpEvalError(f"config key run.parity_alongside=true: the {family.name} family does not say which "
                               "state its model keeps between calls, so two threads cannot share it; set "
                               "run.parity_alongside=false or null")
        return False
    return bool(setting) or (device_type == "cuda" and not compile_vision)


class ParityCheck:
    """This rank's parity rows: `work_items()` go to the loader (prepared on the plain path in its workers),
    `keep` records the batched predictions, `submit` hands each prepared row over as the loader yields it,
    `results` predicts what is left and compares. `begin` first, once the model is loaded."""

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
        self.alone: dict[tuple[int, int], str | None] = {}  # (part, index) -> its reply alone (None: failed)
        self.pending: list[tuple[tuple[int, int], PreparedBatch]] = []  # rows for after the batches
        self.submitted = 0
        self.busy_s = 0.0  # time spent predicting rows alone
        self._thread: threading.Thread | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._closing = False

    def work_items(self) -> list[WorkItem]:
        """One item per parity row of this rank, in the order `submit` expects them back."""
        return [WorkItem(k, PlannedBatch(self.batch_of[(k, i)], (i,)), alone=True) for k, i in self.order]

    def begin(self, backend, plain: list, names: list[str], stop, device=None) -> None:
        """Predict with `backend` (`plain`: each part's plain preprocessor, to prepare a row again; `names`:
        each part's benchmark); with a `device`, in a thread of its own from now on, else after the batches."""
        self.backend, self.plain, self.names, self.stop = backend, plain, names, stop
        self.threaded = device is not None and bool(self.order)  # a rank with no parity rows needs no thread
        if self.threaded:
            self._interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._interval, SWITCH_INTERVAL_S))
            self._thread = threading.Thread(target=self._work, args=(device,), name="parity", daemon=True)
            self._thread.start()

    def keep(self, part: int, batch_id: int, records: list[dict]) -> None:
        """Remember the batched predictions of the parity rows among `records` (failed rows are not checked)."""
        wanted = self.wanted.get(part)
        if not wanted:
            return
        for r in records:
            if r["index"] in wanted and not r.get("error"):
                self.batched[(part, r["index"])] = (batch_id, r["prediction"])

    def submit(self, prepared: PreparedBatch) -> None:
        """The next parity row as the loader prepared it (rows come in `work_items()` order)."""
        key = self.order[self.submitted]
        self.submitted += 1
        if self._thread is not None:
            self._queue.put((key, prepared))
        else:
            self.pending.append((key, prepared))

    def results(self) -> dict[str, list[dict]]:
        """Wait for the thread (or predict the rows kept for now), then per benchmark name
        [{"index", "same", "batched", "alone"}] for every row with a kept batched prediction."""
        start = time.perf_counter()
        if self._thread is not None:
            self._queue.put(None)
            self._join(None)
            if self._error is not None:
                raise self._error
        for key, prepared in self.pending:
            if self.stop.signum is not None:
                break
            self._predict(key, prepared)
        self.pending = []
        return self._compare(time.perf_counter() - start)

    def close(self) -> None:
        """End the thread on any way out (it finishes the row in hand); the rows not predicted are dropped."""
        if self._thread is not None:
            self._closing = True
            self._queue.put(None)
            self._join(60)

    def _join(self, timeout: float | None) -> None:
        self._thread.join(timeout)
        self._thread = None
        sys.setswitchinterval(self._interval)

    def _work(self, device) -> None:
        import torch

        try:
            stream = contextlib.nullcontext()
            if device.type == "cuda":
                torch.cuda.set_device(device)  # a new thread starts on cuda:0
                stream = torch.cuda.stream(torch.cuda.Stream(device))
            with stream:
                done = 0
                while (job := self._queue.get()) is not None and not self._closing:
                    if self.stop.signum is None:
                        self._predict(*job)
                    done += 1
                    if done == len(self.order):  # the last row: the loop has the interpreter to itself again
                        sys.setswitchinterval(self._interval)
        except BaseException as err:  # raised again by results(), in the loop's thread
            self._error = err

    def _predict(self, key: tuple[int, int], prepared: PreparedBatch) -> None:
        if key not in self.batched and self._thread is None:
            return  # its batch failed or ran in an earlier run: nothing to compare with
        start = time.perf_counter()
        part, batch_id = key[0], self.batch_of[key]
        record = self.backend.predict(prepared, lambda rows, p=self.plain[part], b=batch_id: p(b, rows))[0]
        self.alone[key] = record.get("prediction", "") if not record.get("error") else None
        self.busy_s += time.perf_counter() - start

    def _compare(self, waited_s: float) -> dict[str, list[dict]]:
        results: dict[str, list[dict]] = {}
        unchecked = [key for key in self.order if key in self.batched and self.alone.get(key, "") is None]
        if unchecked:  # a failure alone (e.g. out of memory) says nothing about the batched path's replies
            log.warning("parity: %d row(s) failed when predicted alone and are not compared (index %s)",
                        len(unchecked), ", ".join(str(k[1]) for k in unchecked[:10]))
        for key in self.order:
            if key in self.batched and self.alone.get(key) is not None:
                batched = self.batched[key][1]
                results.setdefault(self.names[key[0]], []).append(
                    {"index": key[1], "same": self.alone[key] == batched, "batched": batched, "alone": self.alone[key]})
        if results:
            where = f", alongside the batches; {waited_s:.1f} s waited for after them" if self.threaded else ""
            log.info("parity: %d rows predicted alone in %.1f s%s", sum(map(len, results.values())), self.busy_s,
                     where)
        return results
