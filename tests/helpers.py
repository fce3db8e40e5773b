"""Helpers shared by the subprocess tests (torchrun, launch scripts)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pandas as pd

_scaling = Path(__file__).resolve().parent.parent / "bench" / "scaling.py"
_spec = importlib.util.spec_from_file_location("ddp_eval_bench_scaling", _scaling)
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)
rank_pid = scaling.rank_pid  # torchrun's child process running a given RANK (Linux /proc)


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def predictions(out: Path) -> dict[int, str]:
    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    return dict(zip(table["index"], table["prediction"]))


def shard_records(out: Path) -> list[dict]:
    lines = [json.loads(line) for p in sorted((out / "shards").glob("*.jsonl"))
             for line in p.read_text().splitlines() if line.strip()]
    return [r for r in lines if "index" in r]  # skip the header lines
