"""Helpers shared by the subprocess tests (torchrun, launch scripts)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def predictions(out: Path) -> dict[int, str]:
    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    return dict(zip(table["index"], table["prediction"]))


def shard_records(out: Path) -> list[dict]:
    lines = [json.loads(line) for p in sorted((out / "shards").glob("*.jsonl"))
             for line in p.read_text().splitlines() if line.strip()]
    return [r for r in lines if "index" in r]  # skip the header lines
