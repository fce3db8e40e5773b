"""This rank's planned batches, preprocessed in DataLoader workers while the GPU works on earlier ones."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset

from ddp_eval.core.batch import PreparedBatch
from ddp_eval.core.plan import PlannedBatch
from ddp_eval.dist.group import DistInfo
from ddp_eval.dist.stop import ignore_stop_signals
from ddp_eval.models.base import Preprocessor


class BatchDataset(Dataset):
    """Item i is the i-th planned batch of this rank, fully preprocessed by the model family."""

    def __init__(self, preprocess: Preprocessor, batches: list[PlannedBatch]) -> None:
        self.preprocess = preprocess
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def prepare(self, batch_id: int, indices: tuple[int, ...]) -> PreparedBatch:
        return self.preprocess(batch_id, indices)

    def __getitem__(self, i: int) -> PreparedBatch:
        batch = self.batches[i]
        return self.prepare(batch.batch_id, batch.indices)


def _identity(batch: PreparedBatch) -> PreparedBatch:
    return batch


class Loading:
    """The started loader: iterate it for prepared batches; `close()` ends its workers at once.

    Closing is explicit because an error raised while batches are in flight keeps the iterator alive
    in the traceback's frames, and its workers then block the process's exit (joined forever).
    """

    def __init__(self, dataset: BatchDataset, num_workers: int, info: DistInfo) -> None:
        loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                            pin_memory=info.device.type == "cuda", worker_init_fn=ignore_stop_signals)
        self._batches = iter(loader)

    def __iter__(self) -> Iterator[PreparedBatch]:
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
