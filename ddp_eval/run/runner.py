"""The evaluation job: plan, predict this rank's batches into its shards, then rank 0 gathers and scores.

    data ready (rank 0 downloads) -> plan (same on every rank) -> rank 0 locks and checks the output
    dir and finds rows already predicted -> load the replica on this rank's device -> batches in, one
    shard write per batch out -> completion marker -> rank 0: wait for all ranks, merge, score, report

A suite (`data.benchmarks`) is the same job over several benchmarks with one model load per rank:
each benchmark keeps its own plan (so its predictions are those of a run on it alone, at any world
size), its own folder, shards and resume; their batches run back to back, dealt to ranks as one list,
so no rank idles at a benchmark's end. A benchmark that cannot be loaded or scored is marked failed
in the suite summary and the others go on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ddp_eval.backends.base import Backend
from ddp_eval.backends.hf.backend import HFBackend, generation_kwargs, row_sampling
from ddp_eval.config import Config
from ddp_eval.core.parity import describe, summarize
from ddp_eval.core.plan import skip_done
from ddp_eval.core.sample import Benchmark
from ddp_eval.distributed import completion
from ddp_eval.distributed.group import DistInfo, broadcast_object, checkpoint
from ddp_eval.distributed.progress import JobProgress
from ddp_eval.distributed.stop import StopFlag
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.base import ModelFamily, Speed, resolve_speed
from ddp_eval.models.checkpoint import context_length
from ddp_eval.models.common.thread_state import share_with_threads
from ddp_eval.models.loading import build_ahead, warm_up_device
from ddp_eval.models.registry import family_for
from ddp_eval.report.finish import finish
from ddp_eval.report.summary import SuiteRow, write_summary
from ddp_eval.report.writers import OUTPUT_FILES
from ddp_eval.run.budget import token_budget
from ddp_eval.run.job import Job, plan_job, transformers_version
from ddp_eval.run.loader import BatchDataset, WorkItem, start_loading
from ddp_eval.run.parity import ParityCheck, alongside_planned, parity_count
from ddp_eval.run.resume import resume_state
from ddp_eval.store.gather import gather_predictions
from ddp_eval.store.identity import ModelDigest
from ddp_eval.store.lock import OutputDirLock
from ddp_eval.store.manifest import write_manifest
from ddp_eval.store.shards import ShardWriter, shard_path
from ddp_eval.tasks.load import check_scorable, download_benchmark, load_benchmark, local_path
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
    # Per benchmark of a suite: rows, failed rows and seconds spent on its batches on this rank.
    parts: dict[str, dict[str, float]] = field(default_factory=dict)
    # The parity check (run/parity.py): per benchmark, this rank's rows predicted again alone.
    parity: dict[str, list[dict]] = field(default_factory=dict)
    parity_s: float = 0.0


@dataclass(frozen=True)
class Options:
    """Per-invocation switches from the command line (not part of the config)."""

    show_progress: bool = True
    retry_failed: bool = False
    process_start: float = 0.0  # time.perf_counter() at process start, for time-to-first-batch
    fail_on_a_failed_benchmark: bool = False  # a suite ends with an error (exit 2) when one of its benchmarks failed


@dataclass
class Part:
    """One benchmark of the run: where it writes, and what is left of it for this rank."""

    name: str
    out: Path
    cfg: Config | None = None  # the run's config with this benchmark as data.path
    benchmark: Benchmark | None = None
    job: Job | None = None
    done: set[int] = field(default_factory=set)
    error: str | None = None  # why it could not be loaded, planned or scored (a suite goes on without it)
    metrics: dict | None = None
    run_id: str = ""


def benchmark_names(cfg: Config) -> list[str]:
    return list(cfg.data.benchmarks) if cfg.data.benchmarks else [cfg.data.path]


def part_config(cfg: Config, name: str) -> Config:
    """The config of one benchmark of a suite: the suite's, with data.path naming that benchmark."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=name, benchmarks=None))


def part_dir(cfg: Config, name: str) -> Path:
    """A single benchmark writes into run.output_dir; a suite gives each benchmark a folder of its own."""
    out = Path(cfg.run.output_dir)
    return out / Path(name).stem if cfg.data.benchmarks else out


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
    benchmark = load_benchmark(cfg.data)
    if cfg.scoring.enabled:
        check_scorable(benchmark)
    return benchmark


def predict(cfg: Config, info: DistInfo, dataset: BatchDataset, batches, backend: Backend,
            writers: list[ShardWriter], names: list[str], stop: StopFlag, stats: ShareStats,
            options: Options, parity: ParityCheck | None = None) -> None:
    """Generate for this rank's batches (`batches`: the started loader), appending each to its shard."""
    import torch

    rows = dataset.rows
    done = failed = 0
    next_log = time.perf_counter() + LOG_EVERY_S
    start = tick = time.perf_counter()
    first_written = start
    for position, (part, prepared) in enumerate(batches):
        if dataset.items[position].alone:  # a parity row, prepared alone: the check predicts it
            parity.submit(prepared)
            continue
        stats.wait_s += time.perf_counter() - tick
        tick = time.perf_counter()
        records = backend.predict(prepared, lambda rows_, p=part, b=prepared.batch_id: dataset.prepare(p, b, rows_))
        stats.generate_s += time.perf_counter() - tick
        writers[part].write_batch({**r, "batch": prepared.batch_id, "rank": info.rank} for r in records)
        if parity is not None:
            parity.keep(part, prepared.batch_id, records)
        share = stats.parts.setdefault(names[part], {"rows": 0, "failed": 0, "seconds": 0.0})
        share["seconds"] += time.perf_counter() - tick
        for r in records:
            if r.get("error"):
                failed += 1
                share["failed"] += 1
                log.warning("row %s failed: %s", r["index"], r["error"])
        done += len(records)
        share["rows"] += len(records)
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
    """The whole job on this rank. Rank 0 holds each output dir's lock from its first look at the shards
    to the last file written, so a second run on the same dir stops at once, naming this one. Returns
    rank 0's metrics (a suite: {benchmark: metrics or None}); None on the other ranks."""
    with ExitStack() as held:
        def lock(folder: Path) -> OutputDirLock | None:
            if not info.is_main:
                return None
            folder_lock = OutputDirLock(folder, {"world_size": info.world_size})
            held.callback(folder_lock.release)
            return folder_lock

        return _run(cfg, info, options, lock)


def _run(cfg: Config, info: DistInfo, options: Options, lock) -> dict | None:
    out = Path(cfg.run.output_dir)
    suite = bool(cfg.data.benchmarks)
    since = options.process_start or time.perf_counter()
    family = family_for(Path(cfg.model.path), cfg.model.family)  # a missing model is named before any download
    model_digest = ModelDigest(cfg) if info.is_main else None  # hashed while the benchmarks load
    warm_up = warm_up_device(info.device)
    ahead = _kernels_ahead(cfg, family, info.device)
    if suite:
        _lock_suite_dir(out, info, lock(out), cfg.run.dist_timeout_s)
    parts = [_load_part(cfg, info, name, suite, since) for name in benchmark_names(cfg)]
    if warm_up is not None:  # the CUDA context came up while the benchmarks loaded; the budget needs it
        warm_up.join()
        log.info("CUDA context ready (%.1f s since start)", time.perf_counter() - since)
    budget = token_budget(cfg, info)  # on every rank, whatever loaded: it is a collective
    for part in parts:
        _plan_part(part, info, options, lock, suite, budget, model_digest)
    live = [p for p in parts if p.job is not None]
    items = [WorkItem(k, batch) for k, batch in _deal(live, info)]
    todo = sum(len(item.batch.indices) for item in items)
    log.info("%d benchmark(s), %d rows planned; this rank predicts %d rows in %d batches", len(live),
             sum(len(p.job.benchmark.samples) for p in live), todo, len(items))
    to_predict = sum(len(p.job.benchmark.samples) - len(p.done & p.job.benchmark.by_index.keys()) for p in live)
    run_id = live[0].run_id if live else "no-benchmark"
    # A bar only on a terminal: written to a log file, its redraws run into the log lines.
    with JobProgress([p.out for p in live], to_predict,
                     enabled=options.show_progress and info.is_main and sys.stderr.isatty()):
        try:
            with StopFlag() as stop, ExitStack() as files:
                writers = [files.enter_context(ShardWriter(shard_path(p.out, info.rank, info.world_size),
                                                           p.job.identity)) for p in live]
                stats = _predict_share(live, info, items, writers, stop, options, ahead) if items else ShareStats()
        except BaseException as err:
            completion.mark(out, run_id, info.rank, "failed", f"{type(err).__name__}: {err}")
            raise
        completion.mark(out, run_id, info.rank, "done", json.dumps(asdict(stats)))
        if not info.is_main:
            return None
        details = [json.loads(d) for d in completion.wait_for_ranks(out, run_id, info.world_size,
                                                                    cfg.run.dist_timeout_s)]
    for part in live:
        _finish_part(part, info, details, suite)
    log.info("results in %s (%.1f s since start)", out, time.perf_counter() - since)
    if not suite:
        return parts[0].metrics
    write_summary(out, [_summary_row(p, details) for p in parts])
    failed = [p.name for p in parts if p.error]
    if failed and options.fail_on_a_failed_benchmark:
        raise DdpEvalError(f"{len(failed)} of {len(parts)} benchmarks failed ({', '.join(failed)}; why: the log "
                           f"above and {out / 'summary.json'}); the others' results are in {out}")
    return {p.name: p.metrics for p in parts}


def _kernels_ahead(cfg: Config, family: ModelFamily, device) -> threading.Thread | None:
    """The family's Triton kernels compiled in a thread from here on, beside the benchmark's loading and the
    model's (models/loading.py build_ahead); only on CUDA, only where the speed settings are valid (else
    the plan names the bad key). Joined before the model's first forward."""
    if device.type != "cuda":
        return None
    try:
        speed = resolve_speed(cfg, family, transformers_version(), device.type, report=False)
    except DdpEvalError:
        return None
    return build_ahead(functools.partial(family.kernels_ahead, cfg.model, device, speed), device)


def _lock_suite_dir(out: Path, info: DistInfo, lock: OutputDirLock | None, timeout_s: float) -> None:
    """Rank 0 locks the suite's folder (its benchmarks' folders are locked as each is opened); every rank
    hears if another run holds it."""
    error = None
    if lock is not None:
        try:
            lock.acquire()
            completion.clear_markers(out)
        except DdpEvalError as err:
            error = str(err)
    checkpoint(info, "lock the output dir", timeout_s)
    error = broadcast_object(info, error)
    if error:
        raise DdpEvalError(error)


def _load_part(cfg: Config, info: DistInfo, name: str, suite: bool, since: float) -> Part:
    """Load one benchmark; in a suite an error marks it failed instead of stopping all."""
    part = Part(name=name, out=part_dir(cfg, name), cfg=part_config(cfg, name))
    try:
        _not_an_output(part.cfg, part.out)
        part.benchmark = prepare_data(part.cfg, info)
        log.info("benchmark %s: %d rows loaded (%.1f s since start)", part.benchmark.name,
                 len(part.benchmark.samples), time.perf_counter() - since)
    except DdpEvalError as err:
        _leave_out(part, err, suite)
    return part


def _not_an_output(cfg: Config, out: Path) -> None:
    """The benchmark file must not be one the run writes into its output dir: its results would replace it."""
    path = local_path(cfg.data)
    if path.name in OUTPUT_FILES and path.resolve().parent == out.resolve():
        raise DdpEvalError(f"data.path {path} is inside run.output_dir {out}, where the run writes its own "
                           f"{path.name}: the results would replace the benchmark; use another run.output_dir")


def _plan_part(part: Part, info: DistInfo, options: Options, lock, suite: bool, budget: int | None,
               model_digest: ModelDigest | None = None) -> None:
    """Plan and resume one loaded benchmark (batches within `budget` padded tokens)."""
    if part.benchmark is None:
        return
    try:
        job = plan_job(part.cfg, part.benchmark, info.device.type, budget)
        part.done, part.run_id = resume_state(job, info, part.out, options.retry_failed, lock(part.out),
                                              model_digest)
        part.job = job
    except DdpEvalError as err:
        _leave_out(part, err, suite)


def _leave_out(part: Part, err: DdpEvalError, suite: bool) -> None:
    if not suite:
        raise err
    part.error = str(err)
    log.error("benchmark %s left out of this run: %s", part.name, err)


def _deal(live: list[Part], info: DistInfo):
    """The suite's batches as one list in benchmark order, dealt round-robin; yields (part, batch) of this rank."""
    position = 0
    for k, part in enumerate(live):
        for batch in part.job.plan:
            if position % info.world_size == info.rank:
                for left in skip_done([batch], part.done):
                    yield k, left
            position += 1


def load_backend(job: Job, info: DistInfo, processor) -> Backend:
    """This rank's replica behind the transformers backend, with the family's speed features."""
    model = job.family.load_model(job.cfg.model, info.device, job.speed)
    return HFBackend(model, processor, info.device, generation_kwargs(job.cfg, job.max_new_tokens),
                     mode=job.cfg.generation.mode, fast=job.family.fast_path(model, job.speed),
                     context=context_length(Path(job.cfg.model.path)), sampling=row_sampling(job.cfg))


def _predict_share(live: list[Part], info: DistInfo, items: list[WorkItem], writers: list[ShardWriter],
                   stop: StopFlag, options: Options, ahead: threading.Thread | None = None) -> ShareStats:
    first = live[0].job
    cfg = first.cfg
    stats = ShareStats()
    processors: dict = {}  # one per distinct pixel setting (a benchmark may ask for its own)
    preprocessors, plain = [], []  # per benchmark: its batches' preprocessing, and the plain path's
    start = time.perf_counter()
    for part in live:
        job = part.job
        if job.pixels not in processors:
            processors[job.pixels] = job.family.load_processor(cfg.model, job.pixels)
        for speed, into in ((job.speed, preprocessors), (Speed(), plain)):
            into.append(job.family.preprocessor(processors[job.pixels], job.benchmark, job.task, speed, job.pixels))
    jobs, names = [p.job for p in live], [p.name for p in live]
    count = parity_count(cfg.run.parity_rows, info.device.type, cfg.generation.greedy)
    if cfg.run.parity_rows and not count:
        log.warning("run.parity_rows=%d: no parity check when sampling (generation.greedy=false): a sampled "
                    "reply has no fixed value to compare", cfg.run.parity_rows)
    parity = ParityCheck(jobs, items, count) if count else None
    alongside = parity is not None and alongside_planned(cfg.run.parity_alongside, info.device.type, first.family,
                                                         first.speed.compile_vision)
    rows_alone = parity.work_items() if parity else []
    # Beside the batches the parity rows are wanted early (after the first batch, which they must not
    # delay); otherwise last, so their images are prepared while the GPU runs the last batches.
    ordered = items[:1] + rows_alone + items[1:] if alongside else items + rows_alone
    dataset = BatchDataset(preprocessors, ordered, plain)
    log.info("processor loaded in %.1f s (%.1f s since start)", time.perf_counter() - start,
             time.perf_counter() - (options.process_start or start))
    with start_loading(dataset, cfg.run.num_workers, info) as batches, ExitStack() as held:  # both end on any way out
        start = time.perf_counter()
        backend = load_backend(first, info, processors[first.pixels])
        stats.load_s = time.perf_counter() - start
        log.info("model loaded on %s in %.1f s (%.1f s since start)", info.device, stats.load_s,
                 time.perf_counter() - (options.process_start or start))
        if ahead is not None:  # its kernels compiled before the first forward (inductor's too compiles Triton)
            start = time.perf_counter()
            ahead.join()
            if time.perf_counter() - start > 0.1:
                log.info("waited %.1f s for the vision kernels compiled ahead", time.perf_counter() - start)
        if parity is not None:
            parity.begin(backend, plain, names, stop, info.device if alongside and _shared(first, backend) else None)
            held.callback(parity.close)
        predict(cfg, info, dataset, batches, backend, writers, names, stop, stats, options, parity)
        if parity is not None:
            start = time.perf_counter()
            stats.parity = parity.results()
            stats.parity_s = time.perf_counter() - start
            stop.check(f"rank {info.rank} wrote all {stats.rows} rows; the parity check was cut short")
    log.info("predicted %d rows in %.1f s (%.2f rows/s; model load %.1f s, first batch %.1f s after start)",
             stats.rows, stats.predict_s, stats.rows / max(stats.predict_s, 1e-9), stats.load_s,
             stats.first_batch_s or 0.0)
    return stats


def _shared(job: Job, backend: HFBackend) -> bool:
    """Make the replica's per-call state per thread, for the parity rows alongside; False (with the reason
    logged, or an error where run.parity_alongside=true) where this transformers version keeps it elsewhere."""
    if share_with_threads(backend.model, job.family.thread_state):
        return True
    reason = (f"the {job.family.name} model of this transformers version holds none of "
              f"{', '.join(job.family.thread_state)}, the state it is known to keep between calls")
    if job.cfg.run.parity_alongside:
        raise DdpEvalError(f"config key run.parity_alongside=true: {reason}; set it to false or null")
    log.warning("parity rows predicted after the batches, not alongside them: %s", reason)
    return False


def _finish_part(part: Part, info: DistInfo, details: list[dict], suite: bool) -> None:
    """Rank 0: merge, score and report one benchmark; in a suite an error marks it failed."""
    job = part.job
    try:
        manifest = write_manifest(part.out, info, details)
        parity = summarize([c for d in details for c in d.get("parity", {}).get(part.name, [])],
                           job.cfg.run.parity_min_agreement)
        if parity is not None:
            (log.info if parity["ok"] else log.warning)("%s: %s%s", part.name, describe(parity), "" if parity["ok"] else
                                                        f", below run.parity_min_agreement={parity['min_agreement']}")
        table = gather_predictions(job.benchmark, part.out)
        part.metrics = finish(job.task, table, part.out, score=job.cfg.scoring.enabled, manifest=manifest,
                              parity=parity)
    except DdpEvalError as err:
        if not suite:
            raise
        part.error = str(err)
        log.error("benchmark %s: %s", part.name, err)


def _summary_row(part: Part, details: list[dict]) -> SuiteRow:
    shares = [d.get("parts", {}).get(part.name, {}) for d in details]
    seconds = max((s.get("seconds", 0.0) for s in shares), default=0.0)
    if part.job is None:
        return SuiteRow(part.name, "", None, None, 0, 0, seconds, f"failed: {part.error}", part.out)
    metric, value = part.job.task.primary(part.metrics or {}, part.name) if part.metrics else (None, None)
    failed = int((part.metrics or {}).get("failed", 0))
    status = "failed: " + part.error if part.error else "ok" if part.metrics else "predicted (not scored)"
    return SuiteRow(part.name, part.job.task.name, metric, value, len(part.job.benchmark.samples), failed, seconds,
                    status, part.out)
