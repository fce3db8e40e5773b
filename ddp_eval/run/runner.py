"""The evaluation job: plan, predict this rank's batches into its shard, then rank 0 gathers and scores.

    data ready (rank 0 downloads) -> plan (same on every rank) -> rank 0 checks the output dir and
    finds rows already predicted -> load the replica on this rank's device -> batches in, one shard
    write per batch out -> completion marker -> rank 0: wait for all ranks, merge, score, report
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ddp_eval.backends.base import Backend
from ddp_eval.backends.hf.backend import HFBackend, generation_kwargs
from ddp_eval.config import Config
from ddp_eval.core.plan import PlannedBatch, batches_for_rank, skip_done
from ddp_eval.core.sample import Benchmark
from ddp_eval.dist import completion
from ddp_eval.dist.group import DistInfo, broadcast_object, checkpoint
from ddp_eval.dist.progress import JobProgress
from ddp_eval.dist.stop import StopFlag
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.checkpoint import context_length
from ddp_eval.models.loading import warm_up_device
from ddp_eval.models.registry import family_for
from ddp_eval.report.finish import finish
from ddp_eval.run.job import Job, plan_job
from ddp_eval.run.loader import BatchDataset, start_loading
from ddp_eval.run.resume import resume_state
from ddp_eval.store.gather import gather_predictions
from ddp_eval.store.lock import OutputDirLock
from ddp_eval.store.manifest import write_manifest
from ddp_eval.store.shards import ShardWriter, shard_path
from ddp_eval.tasks.load import download_benchmark, load_benchmark
from ddp_eval.tasks.registry import benchmark_spec

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0  # per-rank progress lines in the log; the bar on rank 0 counts all ranks


@dataclass
class ShareStats:
    """What one rank did, for logs and the run manifest."""

    rows: int = 0
    failed: int = 0
    batches: int = 0
    load_s: float = 0.0  # model load
    first_batch_s: float | None = None  # process start -> first batch written
    predict_s: float = 0.0  # first batch in -> last batch written (preprocessing overlapped)
    wait_s: float = 0.0  # of which waiting for preprocessed batches (the GPU idles)
    generate_s: float = 0.0  # of which in generate (host waits for the GPU at the end of each batch)
    peak_memory_gib: float | None = None
    # The first batch pays one-off costs (CUDA kernels loaded, torch.compile); the rest runs at the steady rate.
    first_batch_rows: int = 0
    after_first_batch_s: float = 0.0  # first batch written -> last batch written


@dataclass(frozen=True)
class Options:
    """Per-invocation switches from the command line (not part of the config)."""

    show_progress: bool = True
    retry_failed: bool = False
    process_start: float = 0.0  # time.perf_counter() at process start, for time-to-first-batch


def prepare_data(cfg: Config, info: DistInfo) -> Benchmark:
    spec = benchmark_spec(cfg.data.path)
    if spec is not None:
        error = None
        if info.is_main:
            try:
                download_benchmark(spec.name, cfg.data.cache_dir, cfg.data.mirror, cfg.data.md5)
            except DdpEvalError as err:
                error = str(err)
        checkpoint(info, "download the benchmark", cfg.run.dist_timeout_s)
        error = broadcast_object(info, error)  # the other ranks wait here while rank 0 downloads
        if error:
            raise DdpEvalError(error)
    return load_benchmark(cfg.data)


def predict(cfg: Config, info: DistInfo, dataset: BatchDataset, batches, backend: Backend, writer: ShardWriter,
            stop: StopFlag, stats: ShareStats, options: Options) -> None:
    """Generate for this rank's batches (`batches`: the started loader), appending each to the shard."""
    import torch

    rows = sum(len(b.indices) for b in dataset.batches)
    done = failed = 0
    next_log = time.perf_counter() + LOG_EVERY_S
    start = tick = time.perf_counter()
    first_written = start
    for prepared in batches:
        stats.wait_s += time.perf_counter() - tick
        if not cfg.generation.greedy:
            torch.manual_seed(cfg.run.seed + prepared.batch_id)  # same rows, same draw, any world size
        tick = time.perf_counter()
        records = backend.predict(prepared, lambda part, b=prepared.batch_id: dataset.prepare(b, part))
        stats.generate_s += time.perf_counter() - tick
        writer.write_batch({**r, "batch": prepared.batch_id, "rank": info.rank} for r in records)
        for r in records:
            if r.get("error"):
                failed += 1
                log.warning("row %s failed: %s", r["index"], r["error"])
        done += len(records)
        stats.batches += 1
        if stats.first_batch_s is None:
            stats.first_batch_s = time.perf_counter() - options.process_start
            stats.first_batch_rows, first_written = len(records), time.perf_counter()
            one_off = " (one-off: CUDA kernels load" + (", torch.compile" if cfg.model.compile_vision else "") + ")"
            log.info("first batch written %.1f s after start: %.1f s waiting for its inputs, %.1f s in the model%s",
                     stats.first_batch_s, stats.wait_s, stats.generate_s,
                     one_off if info.device.type == "cuda" else "")
        if time.perf_counter() >= next_log:
            elapsed = time.perf_counter() - start
            log.info("%d/%d rows, %.2f rows/s on this rank", done, rows, done / elapsed)
            next_log += LOG_EVERY_S
        stop.check(f"rank {info.rank} wrote {done} of {rows} rows; re-run the same command to resume")
        tick = time.perf_counter()
    if info.device.type == "cuda":
        torch.cuda.synchronize(info.device)
        stats.peak_memory_gib = torch.cuda.max_memory_allocated(info.device) / 2**30
    stats.predict_s, stats.rows, stats.failed = time.perf_counter() - start, done, failed
    if stats.first_batch_rows:
        stats.after_first_batch_s = time.perf_counter() - first_written
    if failed:
        log.warning("%d rows failed; they count as wrong; --retry-failed predicts only them again", failed)


def run(cfg: Config, info: DistInfo, options: Options = Options()) -> dict | None:
    """The whole job on this rank; rank 0 holds the output dir's lock from its first look at the shards
    to the last file written, so a second run on the same dir stops at once, naming this one."""
    lock = OutputDirLock(Path(cfg.run.output_dir), {"world_size": info.world_size}) if info.is_main else None
    try:
        return _run(cfg, info, options, lock)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: Config, info: DistInfo, options: Options, lock: OutputDirLock | None) -> dict | None:
    out = Path(cfg.run.output_dir)
    since = options.process_start or time.perf_counter()
    family_for(Path(cfg.model.path), cfg.model.family)  # a missing model is named before any download
    warm_up = warm_up_device(info.device)
    benchmark = prepare_data(cfg, info)
    log.info("benchmark %s: %d rows loaded (%.1f s since start)", benchmark.name, len(benchmark.samples),
             time.perf_counter() - since)
    job = plan_job(cfg, benchmark)
    processor = job.family.load_processor(cfg.model, job.pixels)
    log.info("processor loaded (%.1f s since start)", time.perf_counter() - since)
    done, run_id = resume_state(job, info, out, options.retry_failed, lock)
    plan = job.plan
    mine = skip_done(batches_for_rank(plan, info.rank, info.world_size), done)
    todo = sum(len(b.indices) for b in mine)
    log.info("%d rows in %d batches planned; this rank predicts %d rows in %d batches (%d rows done earlier)",
             len(benchmark.samples), len(plan), todo, len(mine), len(done))
    to_predict = len(benchmark.samples) - len(done & {s.index for s in benchmark.samples})
    # A bar only on a terminal: written to a log file, its redraws run into the log lines.
    with JobProgress(out, to_predict, enabled=options.show_progress and info.is_main and sys.stderr.isatty()):
        try:
            if warm_up is not None:
                warm_up.join()
                log.info("CUDA context ready (%.1f s since start)", time.perf_counter() - since)
            with StopFlag() as stop, ShardWriter(shard_path(out, info.rank, info.world_size), job.identity) as writer:
                stats = _predict_share(job, info, processor, mine, writer, stop, options) if mine else ShareStats()
        except BaseException as err:
            completion.mark(out, run_id, info.rank, "failed", f"{type(err).__name__}: {err}")
            raise
        completion.mark(out, run_id, info.rank, "done", json.dumps(asdict(stats)))
        if not info.is_main:
            return None
        details = completion.wait_for_ranks(out, run_id, info.world_size, cfg.run.dist_timeout_s)
    manifest = write_manifest(out, info, [json.loads(d) for d in details])
    table = gather_predictions(benchmark, out)
    metrics = finish(job.task, table, out, score=cfg.scoring.enabled, manifest=manifest)
    log.info("results in %s (%.1f s since start)", out, time.perf_counter() - since)
    return metrics


def load_backend(job: Job, info: DistInfo, processor) -> Backend:
    """This rank's replica behind the transformers backend, with the family's speed features."""
    model = job.family.load_model(job.cfg.model, info.device, job.speed)
    return HFBackend(model, processor, info.device, generation_kwargs(job.cfg, job.max_new_tokens),
                     mode=job.cfg.generation.mode, fast=job.family.fast_path(model, job.speed),
                     context=context_length(Path(job.cfg.model.path)))


def _predict_share(job: Job, info: DistInfo, processor, mine: list[PlannedBatch], writer: ShardWriter,
                   stop: StopFlag, options: Options) -> ShareStats:
    cfg = job.cfg
    stats = ShareStats()
    preprocess = job.family.preprocessor(processor, job.benchmark, job.task, job.speed, job.pixels)
    dataset = BatchDataset(preprocess, mine)
    with start_loading(dataset, cfg.run.num_workers, info) as batches:  # workers end on any way out
        start = time.perf_counter()
        backend = load_backend(job, info, processor)
        stats.load_s = time.perf_counter() - start
        log.info("model loaded on %s in %.1f s (%.1f s since start)", info.device, stats.load_s,
                 time.perf_counter() - (options.process_start or start))
        predict(cfg, info, dataset, batches, backend, writer, stop, stats, options)
    log.info("predicted %d rows in %.1f s (%.2f rows/s; model load %.1f s, first batch %.1f s after start)",
             stats.rows, stats.predict_s, stats.rows / max(stats.predict_s, 1e-9), stats.load_s,
             stats.first_batch_s or 0.0)
    return stats
