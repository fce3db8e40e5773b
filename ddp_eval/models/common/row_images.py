"""The images a batch's rows show, each read once per batch, for any family's preprocessing."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ddp_eval.core.sample import Benchmark
from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.base import Content


def shown_images(content: Content) -> tuple[Hashable, ...]:
    return tuple(item["image"] for item in content if item["type"] == "image")


def rows_with_images(benchmark: Benchmark, indices: tuple[int, ...], content: Callable[[Any], Content],
                     load: Callable[[Benchmark, Hashable], Any]
                     ) -> tuple[list[tuple[int, Content, tuple[Hashable, ...]]], dict[Hashable, Any], dict[int, str]]:
    """(index, prompt content, image keys) of each row that can run, in order; every image it shows, loaded
    once by `load`; and the rows that cannot, with why: no image, or one that cannot be read."""
    rows, images, failed = [], {}, {}
    for index in indices:
        row_content = content(benchmark.by_index[index])
        keys = shown_images(row_content)
        if not keys:
            failed[index] = f"row index {index} shows no image; this model family's inputs need one at least"
            continue
        try:
            for key in keys:
                if key not in images:
                    images[key] = load(benchmark, key)
        except DdpEvalError as err:
            failed[index] = str(err)
            continue
        rows.append((index, row_content, keys))
    return rows, images, failed
