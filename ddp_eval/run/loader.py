"""This rank's planned batches, preprocessed in DataLoader workers while the GPU works on earlier ones.

A suite's batches come from several benchmarks; each item carries which one (`part`), so its rows are
prepared by that benchmark's preprocessor and written to that benchmark's shard. The parity check's rows
(run/parity.py) follow the batches as items of their own (`alone`), prepared on the plain path by the
same workers, so their images are decoded while the GPU still works on the last batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch.utils.data import DataLoader, Dataset

from ddp_eval.core.batch import PreparedBatch
from ddp_eval.core.plan import PlannedBatch
from ddp_eval.distributed.group import DistInfo
from ddp_eval.distributed.stop import ignore_stop_signals
from ddp_eval.models.base import Preprocessor


@dataclass(frozen=True)
class WorkItem:
    part: int  # which benchmark of the suite (0 for a single benchmark)
    batch: PlannedBatch
    alone: bool = False  # a parity row: prepared by the plain preprocessor, predicted alone


class BatchDataset(Dataset):
    """Item i is the i-th work item of this rank, fully preprocessed: (its benchmark's part, the batch).
    `plain[part]` prepares the items marked `alone` (the parity rows, after every batch)."""

    def __init__(self, preprocessors: Sequence[Preprocessor], items: list[WorkItem],
                 plain: Sequence[Preprocessor] = ()) -> None:
        self.preprocessors = list(preprocessors)
        self.plain = list(plain)
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @property
    def batches(self) -> int:
        return sum(1 for item in self.items if not item.alone)

    @property
    def rows(self) -> int:
        return sum(len(item.batch.indices) for item in self.items if not item.alone)

    def prepare(self, part: int, batch_id: int, indices: tuple[int, ...]) -> PreparedBatch:
        return self.preprocessors[part](batch_id, indices)

    def __getitem__(self, i: int) -> tuple[int, PreparedBatch]:
        item = self.items[i]
        prepare = self.plain[item.part] if item.alone else self.preprocessors[item.part]
        return item.part, prepare(item.batch.batch_id, item.batch.indices)


def _identity(batch):
    return batch


class Loading:
    """The started loader: iterate it for (part, prepared batch); `close()` ends its workers at once.

    Closing is explicit because an error raised while batches are in flight keeps the iterator alive
    in the traceback's frames, and its workers then block the process's exit (joined forever).
    """

    def __init__(self, dataset: BatchDataset, num_workers: int, info: DistInfo) -> None:
        loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                            pin_memory=info.device.type == "cuda", worker_init_fn=ignore_stop_signals)
        self._batches = iter(loader)

    def __iter__(self) -> Iterator[tuple[int, PreparedBatch]]:
        return self._batches

    def close(self) -> None:
        shutdown = getattr(self._batches, "_shutdown_workers", None)  # multi-process loaders only
        if shutdown is not None:
            shutdown()
        self._batches = iter(())

    def __enter__(self) -> Loading:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_loading(dataset: BatchDataset, num_workers: int, info: DistInfo) -> Loading:
    """Start the DataLoader workers; they preprocess the first batches while the model loads."""
    return Loading(dataset, num_workers, info)
