"""Rank completion markers and rank 0's bounded wait for them.

Each rank drops a marker beside its shard when its share is written (or when it fails, with the
reason). Rank 0 waits for every rank's marker with a timeout, so a crashed or hung rank is named
instead of leaving the job waiting forever. Markers carry a run id: stale ones never count.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ddp_eval.errors import DdpEvalError
from ddp_eval.store.shards import SHARD_DIR, shard_path

log = logging.getLogger(__name__)


def _marker(output_dir: Path, run_id: str, rank: int, state: str) -> Path:
    return output_dir / SHARD_DIR / f".{state}-{run_id}-rank{rank:03d}"


def clear_markers(output_dir: Path) -> None:
    folder = output_dir / SHARD_DIR
    if folder.is_dir():
        for path in list(folder.glob(".done-*")) + list(folder.glob(".failed-*")):
            path.unlink(missing_ok=True)


def mark(output_dir: Path, run_id: str, rank: int, state: str, detail: str = "") -> None:
    path = _marker(output_dir, run_id, rank, state)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rank": rank, "detail": detail}) + "\n", encoding="utf-8")
    except OSError as err:
        if state == "done":
            raise  # rank 0 would wait for it: a done marker that cannot be written is an error
        # A failed rank's marker is a courtesy to rank 0; not writing it (a full disk) must not replace the
        # error that made the rank fail.
        log.warning("cannot write %s (%s)", path, err.strerror or err)


def wait_for_ranks(output_dir: Path, run_id: str, world_size: int, timeout_s: float,
                   poll_s: float = 0.2) -> list[str]:
    """Every rank's done detail once all are done; raise naming failed or missing ranks and their shards."""
    deadline = time.monotonic() + timeout_s
    while True:
        failed = [r for r in range(world_size) if _marker(output_dir, run_id, r, "failed").exists()]
        if failed:
            reasons = "; ".join(
                f"rank {r}: {json.loads(_marker(output_dir, run_id, r, 'failed').read_text())['detail']}"
                for r in failed
            )
            raise DdpEvalError(f"rank(s) {', '.join(map(str, failed))} failed ({reasons}); "
                               "re-run the same command to resume from the shards")
        missing = [r for r in range(world_size) if not _marker(output_dir, run_id, r, "done").exists()]
        if not missing:
            return [json.loads(_marker(output_dir, run_id, r, "done").read_text())["detail"]
                    for r in range(world_size)]
        if time.monotonic() >= deadline:
            shards = ", ".join(str(shard_path(output_dir, r, world_size)) for r in missing)
            raise DdpEvalError(
                f"rank(s) {', '.join(map(str, missing))} did not finish within {timeout_s:.0f} s "
                f"(run.dist_timeout_s); their shards: {shards}. Predictions written so far are kept; "
                "re-run the same command to resume"
            )
        time.sleep(poll_s)
