"""What the runner asks of an inference engine; tasks and model families never see which one runs.

A backend holds one replica on this rank's device and turns each prepared batch into one record per
row: its reply, or the reason it has none. `reprepare` builds a batch again from a subset of its
rows (a backend may split a batch that does not fit, as the transformers one does on out-of-memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ddp_eval.core.batch import PreparedBatch

Record = dict[str, Any]  # {"index": ..., "prediction": ..., "error": ... (only when it failed)}


class Backend(Protocol):
    def predict(self, prepared: PreparedBatch,
                reprepare: Callable[[tuple[int, ...]], PreparedBatch]) -> list[Record]: ...
