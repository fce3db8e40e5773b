"""The evaluation job: plan, predict this rank's batches into its shard, then rank 0 gathers and scores.

    data ready (rank 0 downloads) -> plan (same on every rank) -> skip rows already in shards
    -> load replica on this rank's device -> batches in, one shard write per batch out
    -> barrier -> rank 0: merge, check exactly-once, score, report
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ddp_eval import dist
from ddp_eval.config import Config, to_dict
from ddp_eval.data.download import ensure_downloaded, is_benchmark_name
from ddp_eval.data.load import load_benchmark
from ddp_eval.data.rows import Benchmark
from ddp_eval.dist import DistInfo
from ddp_eval.errors import DdpEvalError
from ddp_eval.gather import gather_predictions
from ddp_eval.inputs import BatchDataset, PreparedBatch
from ddp_eval.model import check_inputs_device, load_model, load_processor
from ddp_eval.plan import PlannedBatch, batches_for_rank, plan_batches, skip_done
from ddp_eval.prompts import build_prompt
from ddp_eval.results import finish
from ddp_eval.shards import ShardWriter, done_indices, shard_path

log = logging.getLogger(__name__)


def row_costs(benchmark: Benchmark, min_pixels: int, max_pixels: int) -> dict[int, int]:
    """Approximate prompt tokens per row: image tokens after resizing + text length / 4."""
    from qwen_vl_utils import smart_resize

    image_tokens: dict[int, int] = {}
    costs = {}
    for s in benchmark.samples:
        if s.image_key not in image_tokens:
            width, height = benchmark.images.size(s.image_key)
            h, w = smart_resize(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
            image_tokens[s.image_key] = (h // 28) * (w // 28)
        costs[s.index] = image_tokens[s.image_key] + len(build_prompt(s)) // 4
    return costs


def prepare_data(cfg: Config, info: DistInfo) -> Benchmark:
    if is_benchmark_name(cfg.data.path):
        if info.is_main:
            ensure_downloaded(cfg.data.path, cfg.data.cache_dir, cfg.data.mirror, cfg.data.md5)
        dist.barrier(info)  # the other ranks wait here while rank 0 downloads
    return load_benchmark(cfg.data)


def write_run_info(cfg: Config, info: DistInfo, benchmark: Benchmark, out: Path) -> None:
    meta = {
        "benchmark": benchmark.name, "source": benchmark.source, "rows": len(benchmark.samples),
        "model": str(Path(cfg.model.path).resolve()), "world_size": info.world_size, "config": to_dict(cfg),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _identity(batch: PreparedBatch) -> PreparedBatch:
    return batch


def generation_kwargs(cfg: Config) -> dict:
    gen = cfg.generation
    if gen.greedy:
        return {"max_new_tokens": gen.max_new_tokens, "do_sample": False, "temperature": None,
                "top_p": None, "top_k": None}
    return {"max_new_tokens": gen.max_new_tokens, "do_sample": True, "temperature": gen.temperature,
            "top_p": gen.top_p, "top_k": None}


@torch.inference_mode()
def predict(cfg: Config, info: DistInfo, benchmark: Benchmark, batches: list[PlannedBatch], processor,
            writer: ShardWriter, show_progress: bool) -> int:
    """Generate for `batches`, appending each finished batch to this rank's shard. Returns rows done."""
    model = load_model(cfg.model, info.device)
    dataset = BatchDataset(processor, benchmark, batches, cfg.model.min_pixels, cfg.model.max_pixels)
    loader = DataLoader(dataset, batch_size=None, num_workers=cfg.run.num_workers, collate_fn=_identity,
                        pin_memory=info.device.type == "cuda")
    gen_kwargs = generation_kwargs(cfg)
    rows = sum(len(b.indices) for b in batches)
    bar = tqdm(total=rows, unit="row", desc=f"rank {info.rank}", disable=not show_progress)
    done, checked = 0, False
    for prepared in loader:
        inputs = prepared.inputs.to(info.device, non_blocking=True)
        if not checked:
            check_inputs_device(inputs, info.device)
            checked = True
        if not cfg.generation.greedy:
            torch.manual_seed(cfg.run.seed + prepared.batch_id)  # same rows, same draw, any world size
        output = model.generate(**inputs, **gen_kwargs)
        replies = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)
        writer.write_batch(
            {"index": index, "prediction": reply, "batch": prepared.batch_id, "rank": info.rank}
            for index, reply in zip(prepared.indices, replies)
        )
        done += len(prepared.indices)
        bar.update(len(prepared.indices))
    bar.close()
    return done


def run(cfg: Config, info: DistInfo, show_progress: bool = True) -> dict | None:
    out = Path(cfg.run.output_dir)
    benchmark = prepare_data(cfg, info)
    processor = load_processor(cfg.model)
    if info.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DdpEvalError(f"run.output_dir: cannot create {out} ({err.strerror})") from None
        write_run_info(cfg, info, benchmark, out)
    # Rank 0 reads what earlier runs (of any world size) already predicted; all ranks use its view.
    done = dist.broadcast_object(info, done_indices(out) if info.is_main else None)
    plan = plan_batches(row_costs(benchmark, cfg.model.min_pixels, cfg.model.max_pixels), cfg.run.batch_size)
    mine = skip_done(batches_for_rank(plan, info.rank, info.world_size), done)
    todo = sum(len(b.indices) for b in mine)
    log.info("%d rows in %d batches planned; this rank predicts %d rows in %d batches (%d rows done earlier)",
             len(benchmark.samples), len(plan), todo, len(mine), len(done))
    start = time.perf_counter()
    with ShardWriter(shard_path(out, info.rank, info.world_size)) as writer:
        if mine:
            predicted = predict(cfg, info, benchmark, mine, processor, writer, show_progress and info.is_main)
            elapsed = time.perf_counter() - start
            log.info("predicted %d rows in %.1f s (%.2f rows/s)", predicted, elapsed, predicted / max(elapsed, 1e-9))
    dist.barrier(info)
    if not info.is_main:
        return None
    table = gather_predictions(benchmark, out)
    metrics = finish(table, out, score=cfg.scoring.enabled)
    log.info("results in %s", out)
    return metrics
