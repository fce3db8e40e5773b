"""Rank 0: shard records + benchmark table -> one predictions table, each row exactly once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ddp_eval.core.sample import Benchmark
from ddp_eval.store.shards import merge_records, read_shards


def gather_predictions(benchmark: Benchmark, output_dir: Path) -> pd.DataFrame:
    """The benchmark's columns (no images) + prediction + error (empty unless the row failed)."""
    expected = [s.index for s in benchmark.samples]
    contents = read_shards(output_dir)
    merged = merge_records(contents.records, expected, contents.origins)  # one record per index, by construction
    table = benchmark.table.copy()
    table["prediction"] = [merged[i]["prediction"] for i in expected]
    table["error"] = [merged[i].get("error", "") for i in expected]
    return table
