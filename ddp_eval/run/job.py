"""Everything a run decides before it loads weights, decided once: the task, the model family, the
pixel bounds, the speed features, the run identity and the global plan of batches.

Every rank computes the same Job from the same config and benchmark (the plan does not depend on the
world size); `--dry-run` prints it.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddp_eval.config import Config
from ddp_eval.core.plan import PlannedBatch, plan_batches
from ddp_eval.core.sample import Benchmark
from ddp_eval.models.base import ModelFamily, Pixels, Speed, resolve_speed
from ddp_eval.models.registry import family_for
from ddp_eval.run.budget import batch_rows
from ddp_eval.store.identity import run_identity
from ddp_eval.tasks.base import Task
from ddp_eval.tasks.registry import get_task


@dataclass
class Job:
    cfg: Config
    benchmark: Benchmark
    task: Task
    family: ModelFamily
    pixels: Pixels
    speed: Speed
    identity: dict[str, Any]
    costs: dict[int, int]
    plan: list[PlannedBatch]
    batch_rows: int = 8
    batch_tokens: int | None = None

    @property
    def max_new_tokens(self) -> int:
        wanted = self.task.settings(self.benchmark.name).max_new_tokens
        return self.cfg.generation.max_new_tokens if wanted is None or self.cfg.is_set("generation.max_new_tokens") \
            else wanted


def transformers_version() -> str:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def local_device_type() -> str:
    """The device a run started here would use, for --dry-run and doctor (no CUDA context is created)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def plan_job(cfg: Config, benchmark: Benchmark, device_type: str = "cpu", token_budget: int | None = None) -> Job:
    """The job on a device of `device_type` ("cuda" or "cpu"): switches left at null follow it. Batches
    take at most `batch_rows` rows and `token_budget` padded prompt tokens (run/budget.py)."""
    task = get_task(benchmark.task)
    family = family_for(Path(cfg.model.path), cfg.model.family)
    pixels = family.pixels(cfg, task.settings(benchmark.name), task.rules(benchmark.name))
    speed = resolve_speed(cfg, family, transformers_version(), device_type)
    costs = family.costs(benchmark, task, pixels)
    rows, tokens = batch_rows(cfg, device_type), cfg.run.batch_tokens or token_budget
    plan = plan_batches(costs, rows, tokens, groups={s.index: s.image_group for s in benchmark.samples})
    return Job(cfg=cfg, benchmark=benchmark, task=task, family=family, pixels=pixels, speed=speed,
               identity=run_identity(cfg, benchmark, task, pixels), costs=costs, plan=plan, batch_rows=rows,
               batch_tokens=tokens)
