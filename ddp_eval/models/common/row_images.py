"""The images a batch's rows show, each read once per batch, for any family's preprocessing."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ddp_eval.core.sample import Benchmark
from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.base import Content


def shown_images(content: Content) -> tuple[Hashable, ...]:
    return tuple(item["image"] for item in content if item["type"] == "image")


# Threads that decode and resize one batch's images side by side: PIL releases the interpreter lock in
# both, so the first batch of a run of distinct images (prepared by one DataLoader worker alone) comes
# sooner (2.3x for 64 MMBench-sized images on 2 cores). Few, since each DataLoader worker has its own.
LOAD_THREADS = max(1, min(4, os.cpu_count() or 1))


def rows_with_images(benchmark: Benchmark, indices: tuple[int, ...], content: Callable[[Any], Content],
                     load: Callable[[Benchmark, Hashable], Any]
                     ) -> tuple[list[tuple[int, Content, tuple[Hashable, ...]]], dict[Hashable, Any], dict[int, str]]:
    """(index, prompt content, image keys) of each row that can run, in order; every image it shows, loaded
    once by `load`; and the rows that cannot, with why: no image, or one that cannot be read (the first of
    its images, in the row's order, that `load` refuses)."""
    shown, failed = [], {}
    for index in indices:
        row_content = content(benchmark.by_index[index])
        keys = shown_images(row_content)
        if not keys:
            failed[index] = f"row index {index} shows no image; this model family's inputs need one at least"
            continue
        shown.append((index, row_content, keys))
    distinct = list(dict.fromkeys(k for _, _, keys in shown for k in keys))
    loaded, refused = _load_all(benchmark, distinct, load)
    rows, images = [], {}
    for index, row_content, keys in shown:
        bad = next((k for k in keys if k in refused), None)
        if bad is not None:
            failed[index] = refused[bad]
            continue
        images.update((k, loaded[k]) for k in keys)
        rows.append((index, row_content, keys))
    return rows, images, failed


def _load_all(benchmark: Benchmark, keys: list[Hashable], load: Callable[[Benchmark, Hashable], Any]
              ) -> tuple[dict[Hashable, Any], dict[Hashable, str]]:
    """Each key's image, or why it cannot be read (a DdpEvalError); any other error is raised as it is."""
    def one(key: Hashable) -> tuple[Any, str | None]:
        try:
            return load(benchmark, key), None
        except DdpEvalError as err:
            return None, str(err)

    if len(keys) > 1 and LOAD_THREADS > 1:
        with ThreadPoolExecutor(min(LOAD_THREADS, len(keys)), thread_name_prefix="ddp_eval-images") as pool:
            results = list(pool.map(one, keys))
    else:
        results = [one(k) for k in keys]
    loaded = {k: image for k, (image, why) in zip(keys, results) if why is None}
    return loaded, {k: why for k, (_, why) in zip(keys, results) if why is not None}
