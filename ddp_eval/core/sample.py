"""A benchmark row as the runner sees it, the store its images come from, and the loaded benchmark.

A task builds its own sample type on `Sample` (a multiple-choice row adds its question, options and
answer); planning, preprocessing and the shards only need the index and which images the row shows.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sample:
    index: int  # the index column's integer, or the row's position where the column is not all integers
    image_keys: tuple[Hashable, ...]  # the stored images this row shows, in file order (rows may share them)

    @property
    def image_group(self) -> Hashable:
        """Rows with the same images form one group: planned into one batch, each image encoded once."""
        return self.image_keys if self.image_keys else ("row", self.index)


class ImageStore(Protocol):
    def open(self, key: Hashable) -> Any: ...  # a decoded PIL image

    def size(self, key: Hashable) -> tuple[int, int]: ...

    def describe(self, key: Hashable) -> str: ...


@dataclass
class Benchmark:
    name: str
    source: str
    table: Any  # pandas DataFrame: the benchmark's columns without images, one row per sample, file order
    samples: list[Sample]
    images: ImageStore
    task: str = ""  # the registered task that reads, prompts and scores it

    def __post_init__(self) -> None:
        self.by_index = {s.index: s for s in self.samples}
