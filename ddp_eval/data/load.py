"""One entry point from `data.*` config to a Benchmark, whatever the format."""

from __future__ import annotations

from pathlib import Path

from ddp_eval.config import DataConfig
from ddp_eval.data.download import cached_path, is_benchmark_name
from ddp_eval.data.rows import Benchmark
from ddp_eval.errors import DdpEvalError


def local_path(cfg: DataConfig) -> Path:
    """The file or directory to read: a benchmark name maps to its cached download."""
    if is_benchmark_name(cfg.path):
        return cached_path(cfg.path, cfg.cache_dir)
    return Path(cfg.path)


def detect_format(path: Path) -> str:
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return "hf_dataset"
    return "mmbench_tsv"


def load_benchmark(cfg: DataConfig) -> Benchmark:
    path = local_path(cfg)
    if not path.exists():
        raise DdpEvalError(f"data.path: benchmark not found at {path}")
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    if fmt == "hf_dataset":
        from ddp_eval.data.hf_dataset import load_hf_dataset

        bench = load_hf_dataset(path, cfg.limit)
    else:
        from ddp_eval.data.mmbench_tsv import load_mmbench_tsv

        bench = load_mmbench_tsv(path, cfg.limit)
    if is_benchmark_name(cfg.path):
        bench.name = cfg.path
    return bench
