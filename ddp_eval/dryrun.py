"""`--dry-run`: what a run would do (plan per rank, largest batch, outputs, resume) without loading weights."""

from __future__ import annotations

from pathlib import Path

from ddp_eval.config import Config
from ddp_eval.costs import row_costs
from ddp_eval.data.download import cached_path, is_benchmark_name
from ddp_eval.data.load import load_benchmark
from ddp_eval.identity import run_identity
from ddp_eval.plan import batches_for_rank, plan_batches, skip_done
from ddp_eval.shards import check_identity, done_indices, read_shards, shard_path


def describe(cfg: Config, world_size: int) -> str:
    if is_benchmark_name(cfg.data.path) and not cached_path(cfg.data.path, cfg.data.cache_dir).exists():
        return (f"benchmark {cfg.data.path} is not downloaded yet: a run would fetch it into "
                f"{cached_path(cfg.data.path, cfg.data.cache_dir)} first; nothing else to show")
    bench = load_benchmark(cfg.data)
    costs = row_costs(bench, cfg.model.min_pixels, cfg.model.max_pixels)
    plan = plan_batches(costs, cfg.run.batch_size, cfg.run.batch_tokens,
                        groups={s.index: s.image_key for s in bench.samples})
    out = Path(cfg.run.output_dir)
    contents = read_shards(out)
    check_identity(contents, run_identity(cfg, bench), out)
    done = done_indices(contents)
    largest = max(plan, key=lambda b: max(costs[i] for i in b.indices) * len(b.indices))
    longest = max(costs[i] for i in largest.indices)
    images = len({s.image_key for s in bench.samples})
    lines = [
        f"benchmark: {bench.name} ({len(bench.samples)} rows, {images} distinct images) from {bench.source}",
        f"plan: {len(plan)} batches of at most {cfg.run.batch_size} rows"
        + (f" and {cfg.run.batch_tokens} padded tokens" if cfg.run.batch_tokens else "")
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
    lines.append(f"outputs: {out}/predictions.tsv, metrics.json, report.md, manifest.json, per-category CSV/PNG")
    lines.append("no weights were loaded")
    return "\n".join(lines)
