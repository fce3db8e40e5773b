"""A benchmark file as read, before any task looks at it: its table, which images each row shows, the store."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import pandas as pd

from ddp_eval.core.sample import ImageStore


@dataclass
class RawRows:
    name: str  # the file's stem (a benchmark name replaces it)
    source: str  # the path, for messages
    table: pd.DataFrame  # every column but the images, one row per sample, file order
    image_keys: list[tuple[Hashable, ...]]  # per table row: the stored images it shows, in order
    images: ImageStore
