"""`--dry-run`: what a run would do (plan per rank, largest batch, outputs, resume) without loading weights."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

from ddp_eval.config import Config
from ddp_eval.core.plan import batches_for_rank, skip_done
from ddp_eval.data.download import file_md5
from ddp_eval.models.checkpoint import context_length
from ddp_eval.models.registry import family_for
from ddp_eval.run.job import local_device_type, plan_job
from ddp_eval.store.identity import content_digests
from ddp_eval.store.lock import read_holder
from ddp_eval.store.shards import check_identity, done_indices, empty_foreign_shards, read_shards, shard_path
from ddp_eval.tasks.load import check_scorable, load_benchmark, local_path
from ddp_eval.tasks.registry import benchmark_spec


def describe(cfg: Config, world_size: int) -> str:
    family_for(Path(cfg.model.path), cfg.model.family)  # a missing model is named first
    if cfg.data.benchmarks:
        from ddp_eval.run.runner import part_config, part_dir

        return "\n\n".join(_describe(dataclasses.replace(part_config(cfg, name), run=dataclasses.replace(
            cfg.run, output_dir=str(part_dir(cfg, name)))), world_size) for name in cfg.data.benchmarks)
    return _describe(cfg, world_size)


def _describe(cfg: Config, world_size: int) -> str:
    spec = benchmark_spec(cfg.data.path)
    if spec is not None and not local_path(cfg.data).exists():
        return (f"benchmark {cfg.data.path} is not downloaded yet: a run would fetch it into "
                f"{local_path(cfg.data)} first; nothing else to show")
    if spec is not None and (got := file_md5(local_path(cfg.data))) != (cfg.data.md5 or spec.md5):
        return (f"benchmark {cfg.data.path}: {local_path(cfg.data)} has md5 {got}, not the expected "
                f"{cfg.data.md5 or spec.md5}: a run would download it again first; nothing else to show")
    bench = load_benchmark(cfg.data)
    if cfg.scoring.enabled:
        check_scorable(bench)
    job = plan_job(cfg, bench, local_device_type())
    costs, plan = job.costs, job.plan
    out = Path(cfg.run.output_dir)
    contents = read_shards(out)
    identity = {**job.identity, **content_digests(cfg, bench)}
    check_identity(contents, identity, out, ignore=empty_foreign_shards(contents, identity))  # a run replaces those
    done = done_indices(contents)
    largest = max(plan, key=lambda b: max(costs[i] for i in b.indices) * len(b.indices))
    longest = max(costs[i] for i in largest.indices)
    images = len({k for s in bench.samples for k in s.image_keys})
    lines = [
        f"benchmark: {bench.name} ({len(bench.samples)} rows, {images} distinct images) from {bench.source}",
        f"task: {job.task.name}; model family: {job.family.name}; pixels {job.pixels.min_pixels}-"
        f"{job.pixels.max_pixels}; speed: " + ", ".join(f"{k}={v}" for k, v in asdict(job.speed).items()),
        f"plan: {len(plan)} batches of at most {job.batch_rows} rows"
        + (f" and {job.batch_tokens} padded tokens" if job.batch_tokens else "")
        + (" (on CUDA a token budget from the free memory may cut them smaller)"
           if job.batch_tokens is None and local_device_type() == "cuda" else "")
        + f"; world size {world_size}",
        f"largest batch: {len(largest.indices)} rows x {longest} tokens = {longest * len(largest.indices)} "
        f"padded prompt tokens, about {sum(costs[i] for i in largest.indices) * 4} ViT patches",
    ]
    for rank in range(world_size):
        mine = batches_for_rank(plan, rank, world_size)
        todo = skip_done(mine, done)
        rows = sum(len(b.indices) for b in mine)
        left = sum(len(b.indices) for b in todo)
        lines.append(f"  rank {rank}: {len(mine)} batches, {rows} rows, {left} to predict -> "
                     f"{shard_path(out, rank, world_size)}")
    lines.append(f"resume: {len(done)} of {len(bench.samples)} rows already in {out / 'shards'} would be skipped"
                 if done else f"resume: nothing predicted yet in {out}")
    context = context_length(Path(cfg.model.path))
    too_long = sorted(i for i, c in costs.items() if context is not None and c > context)
    if too_long:
        lines.append(f"warning: {len(too_long)} rows are longer than the model's context of {context} tokens "
                     f"(index {', '.join(map(str, too_long[:5]))}{', ...' if len(too_long) > 5 else ''}); "
                     "a run records them as failed")
    holder = read_holder(out)
    if holder is not None:
        lines.append(f"warning: {out} is in use by another run ({holder.describe()}); a run now would be refused")
    lines.append(f"outputs: {out}/predictions.tsv, metrics.json, report.md, manifest.json, per-category CSV/PNG")
    lines.append("no weights were loaded")
    return "\n".join(lines)
