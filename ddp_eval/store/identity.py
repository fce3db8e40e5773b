"""What a set of shards belongs to: benchmark contents, model, and the settings that change replies.

Written as the first line of every shard; a run refuses an output dir whose shards carry another
identity, so predictions of two different runs are never mixed. Besides the rows' text and the
settings it holds digests of the files' contents (the benchmark file and its image files, every file
of the checkpoint), computed once by rank 0 (`content_digests`), so replaced images or weights at
the same paths do not resume old predictions.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from ddp_eval.config import Config
from ddp_eval.core.sample import Benchmark
from ddp_eval.data.images import IMAGE_PIPELINE
from ddp_eval.models.base import Pixels
from ddp_eval.store.digests import cache_dir_of, data_files, files_digest, model_files
from ddp_eval.tasks.base import Task

# Keys added after shards were first written: a shard that lacks one is not refused for it.
LATER_KEYS = ("data_files", "model_files")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def benchmark_digest(benchmark: Benchmark, task: Task) -> str:
    return _digest([task.digest_fields(s) for s in benchmark.samples])


def model_digest(model_dir: Path) -> str:
    config = model_dir / "config.json"
    return _digest(config.read_text(encoding="utf-8")) if config.is_file() else "none"


def run_identity(cfg: Config, benchmark: Benchmark, task: Task, pixels: Pixels) -> dict[str, Any]:
    model_dir = Path(cfg.model.path).resolve()
    generation = {
        "mode": cfg.generation.mode, "max_new_tokens": cfg.generation.max_new_tokens,
        "greedy": cfg.generation.greedy, "temperature": cfg.generation.temperature, "top_p": cfg.generation.top_p,
    }
    # Later keys only where they differ from their default, so shards written before them still resume.
    if cfg.generation.repetition_penalty != 1.0:
        generation["repetition_penalty"] = cfg.generation.repetition_penalty
    if cfg.generation.presence_penalty != 0.0:
        generation["presence_penalty"] = cfg.generation.presence_penalty
    if not cfg.generation.greedy:  # sampled replies follow the seed, drawn per row (backends/hf/sampling.py)
        generation.update(top_k=cfg.generation.top_k, seed=cfg.run.seed, draws="per_row")
    return {
        "benchmark": benchmark.name,
        "benchmark_digest": benchmark_digest(benchmark, task),
        "model": str(model_dir),
        "model_digest": model_digest(model_dir),
        "dtype": cfg.model.dtype,
        "min_pixels": pixels.min_pixels,
        "max_pixels": pixels.max_pixels,
        "generation": generation,
        "images": IMAGE_PIPELINE,
    }


class ModelDigest:
    """The checkpoint's files digest, hashed in a thread from the moment it is made. A fresh checkpoint
    of a few GB takes seconds to hash; started at process start it overlaps reading the benchmark and
    bringing up the device, and it leaves the weights in the page cache for their load. The thread is a
    daemon: a run that stops early does not wait for it."""

    def __init__(self, cfg: Config) -> None:
        self._files, self._cache = model_files(Path(cfg.model.path)), cache_dir_of(cfg.data.cache_dir)
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._hash, name="model-digest", daemon=True)
        self._thread.start()

    def _hash(self) -> None:
        try:
            self._digest = files_digest(self._files, self._cache)
        except BaseException as err:  # re-raised where the digest is used
            self._error = err

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest


def content_digests(cfg: Config, benchmark: Benchmark, model: ModelDigest | None = None) -> dict[str, str]:
    """Digests of the benchmark's files (with the image files its rows name) and the checkpoint's files
    (`model`: one started earlier). The model's comes first: both write the same digest cache."""
    cache = cache_dir_of(cfg.data.cache_dir)
    model_digest = model.result() if model is not None else files_digest(model_files(Path(cfg.model.path)), cache)
    image_paths = list(getattr(benchmark.images, "paths", {}).values())
    return {"data_files": files_digest(data_files(Path(benchmark.source), image_paths), cache),
            "model_files": model_digest}


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    keys = sorted(k for k in set(ours) | set(theirs) if k not in LATER_KEYS or (k in ours and k in theirs))
    return [f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} now" for k in keys if ours.get(k) != theirs.get(k)]
