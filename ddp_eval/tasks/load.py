"""`data.*` config -> the Benchmark: the file (a benchmark name maps to its cached download) read by
its task."""

from __future__ import annotations

from pathlib import Path

from ddp_eval.config import DataConfig
from ddp_eval.core.sample import Benchmark
from ddp_eval.data.download import cached_path, download_url, ensure_downloaded
from ddp_eval.data.load import load_rows
from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.registry import benchmark_spec, get_task, task_for, unknown_benchmark

FILE_SUFFIXES = (".tsv", ".xlsx", ".parquet", ".csv", ".arrow")


def looks_like_a_name(path: str) -> bool:
    """A data.path with no folder and no file suffix (e.g. "MMStar"): meant as a benchmark name."""
    return "/" not in path and "\\" not in path and Path(path).suffix.lower() not in FILE_SUFFIXES


def local_path(cfg: DataConfig) -> Path:
    """The file or directory to read: a benchmark name maps to its cached download."""
    if benchmark_spec(cfg.path) is not None:
        return cached_path(cfg.path, cfg.cache_dir)
    path = Path(cfg.path)
    if looks_like_a_name(cfg.path) and not path.exists():
        raise unknown_benchmark(cfg.path)
    return path


def download_benchmark(name: str, cache_dir: str, mirror: str | None = None, md5: str | None = None,
                       show_progress: bool = True) -> Path:
    """The verified file of a named benchmark in `cache_dir`, downloaded (from `mirror`, if given) when missing."""
    spec = benchmark_spec(name)
    if spec is None:
        raise unknown_benchmark(name)
    return ensure_downloaded(name, download_url(spec.url, mirror), md5 or spec.md5, cache_dir, show_progress)


def load_benchmark(cfg: DataConfig) -> Benchmark:
    task = task_for(cfg.path, cfg.task)
    rows = load_rows(local_path(cfg), cfg.format, cfg.limit)
    name = cfg.path if benchmark_spec(cfg.path) is not None else rows.name
    return Benchmark(name=name, source=rows.source, table=rows.table, samples=task.samples(rows, name),
                     images=rows.images, task=task.name)


def check_scorable(benchmark: Benchmark) -> None:
    """Before anything is predicted: a file with answers for some rows only cannot be scored, so say so now,
    naming the file, rather than after every row is predicted."""
    task = get_task(benchmark.task)
    try:
        task.answer_status(task.normalize_columns(benchmark.table))
    except DdpEvalError as err:
        raise DdpEvalError(f"{benchmark.source}: {err}; fix the file, or set scoring.enabled=false to predict "
                           "without scoring") from None
