"""Before predicting: rank 0 checks the output dir, refuses foreign shards, lists rows already done.

Every rank receives rank 0's answer (or its error), so all ranks plan from the same view and fail
together instead of leaving the others waiting.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from ddp_eval.config import to_dict
from ddp_eval.distributed import completion
from ddp_eval.distributed.group import DistInfo, broadcast_object, checkpoint
from ddp_eval.errors import DdpEvalError
from ddp_eval.run.job import Job
from ddp_eval.store.atomic import atomic_write_text
from ddp_eval.store.identity import ModelDigest, content_digests
from ddp_eval.store.lock import OutputDirLock
from ddp_eval.store.shards import check_identity, done_indices, empty_foreign_shards, read_shards

log = logging.getLogger(__name__)

MIN_FREE_BYTES = 64 * 2**20  # shards of a large benchmark plus its predictions.tsv and report


def resume_state(job: Job, info: DistInfo, out: Path, retry_failed: bool,
                 lock: OutputDirLock | None = None, model_digest: ModelDigest | None = None) -> tuple[set[int], str]:
    """Rank 0 takes the output dir's lock (`lock`), checks the dir, completes the run identity with the
    files' digests (the checkpoint's from `model_digest` where one was started) and lists rows already
    predicted; every rank gets its answer (or its error).
    `job.identity` is then the same on every rank."""
    state: tuple[set[int], str, dict] | str
    if info.is_main:
        try:
            if lock is not None:
                lock.acquire()  # a second run on this dir stops here, naming the first
            state = _scan_output_dir(job, info, out, retry_failed, model_digest)
        except DdpEvalError as err:
            state = str(err)
    else:
        state = ""
    checkpoint(info, "plan the run and check the output dir", job.cfg.run.dist_timeout_s)
    state = broadcast_object(info, state)
    if isinstance(state, str):
        raise DdpEvalError(state)
    done, run_id, job.identity = state
    return done, run_id


def check_writable(out: Path, need_bytes: int = MIN_FREE_BYTES) -> None:
    """The output dir exists, takes a file, and has room for the shards and results."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
        free = shutil.disk_usage(out).free
    except OSError as err:
        raise DdpEvalError(f"run.output_dir: cannot write to {out} ({err.strerror or err})") from None
    if free < need_bytes:
        raise DdpEvalError(f"run.output_dir: {out} has {free / 2**20:.1f} MiB free, less than the "
                           f"{need_bytes / 2**20:.0f} MiB a run needs for its shards and results; free some space "
                           "and re-run (predictions already written are kept)")


def _scan_output_dir(job: Job, info: DistInfo, out: Path, retry_failed: bool,
                     model_digest: ModelDigest | None) -> tuple[set[int], str, dict]:
    benchmark = job.benchmark
    check_writable(out)
    contents = read_shards(out)
    identity = {**job.identity, **content_digests(job.cfg, benchmark, model_digest)}
    empty = empty_foreign_shards(contents, identity)
    for path in empty:  # before any rank opens its shard: they wait for this scan
        path.unlink()
        log.warning("%s: removed, a shard of a run with other settings that holds no prediction", path)
    check_identity(contents, identity, out, ignore=empty)
    known = {s.index for s in benchmark.samples}
    stray = sorted({int(r["index"]) for r in contents.records} - known)
    if stray:
        raise DdpEvalError(f"{out} holds predictions for rows not in this benchmark (index {stray[:5]}); "
                           "use another run.output_dir")
    completion.clear_markers(out)
    meta = {"benchmark": benchmark.name, "source": benchmark.source, "rows": len(benchmark.samples),
            "world_size": info.world_size, "identity": identity, "config": to_dict(job.cfg),
            "task": job.task.name, "family": job.family.name, "speed": asdict(job.speed),
            "plain_path": job.family.plain_path,  # why plain generate runs (None: the family has speed features)
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(out / "run.json", json.dumps(meta, indent=2) + "\n")
    return done_indices(contents, retry_failed=retry_failed), uuid.uuid4().hex[:12], identity
