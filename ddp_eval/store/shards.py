"""Per-rank JSONL shard files: a header line, then one line per sample, one write per batch.

A line cut by a crash mid-write is dropped when reading (and trimmed before appending), so its
sample is simply predicted again. A sample that failed (bad image, OOM at batch size 1) has a
record with an `error`; a later successful record for the same index supersedes it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddp_eval.errors import DdpEvalError
from ddp_eval.store.identity import differences

log = logging.getLogger(__name__)

SHARD_DIR = "shards"
HEADER_KEY = "ddp_eval_shard"


def shard_path(output_dir: Path, rank: int, world_size: int) -> Path:
    return output_dir / SHARD_DIR / f"rank{rank:03d}-of-{world_size:03d}.jsonl"


def _trim_partial_tail(path: Path) -> None:
    """Cut a last line without its newline (a write interrupted mid-line)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping a cut last line (%d bytes); its sample will be predicted again",
                    path, len(data) - keep)
        f.truncate(keep)


class ShardWriter:
    """Appends records to this rank's shard; each batch is one write, flushed and fsynced."""

    def __init__(self, path: Path, identity: dict[str, Any] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _trim_partial_tail(path)
        fresh = not path.exists() or path.stat().st_size == 0
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        if fresh and identity is not None:
            self._append([{HEADER_KEY: 1, "identity": identity}])

    def _append(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def write_batch(self, records: Iterable[dict[str, Any]]) -> None:
        self._append(records)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ShardContents:
    records: list[dict[str, Any]] = field(default_factory=list)
    identities: dict[Path, dict[str, Any]] = field(default_factory=dict)


def read_shard(path: Path, into: ShardContents) -> None:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise DdpEvalError(f"{path}: not UTF-8; the shard is damaged") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # cut last line: recomputed on resume
                log.warning("%s: ignoring a cut last line", path)
                continue
            raise DdpEvalError(f"{path}, line {number}: not valid JSON; the shard is damaged") from None
        if HEADER_KEY in record:
            into.identities[path] = record["identity"]
        elif "index" in record:
            into.records.append(record)
        else:
            raise DdpEvalError(f"{path}, line {number}: a record without an index; the shard is damaged")


def read_shards(output_dir: Path) -> ShardContents:
    contents = ShardContents()
    folder = output_dir / SHARD_DIR
    if folder.is_dir():
        for path in sorted(folder.glob("*.jsonl")):
            read_shard(path, contents)
    return contents


def check_identity(contents: ShardContents, identity: dict[str, Any], output_dir: Path) -> None:
    """Refuse shards written for another benchmark, model or generation setting."""
    for path, theirs in contents.identities.items():
        diff = differences(identity, theirs)
        if diff:
            raise DdpEvalError(
                f"{output_dir} holds shards of another run ({path.name}: {'; '.join(diff)}); "
                f"use another run.output_dir, or delete {output_dir / SHARD_DIR} to start over"
            )


def done_indices(contents: ShardContents, retry_failed: bool = False) -> set[int]:
    """Rows not to predict again: all recorded rows, or only the successful ones with retry_failed."""
    return {int(r["index"]) for r in contents.records if not (retry_failed and r.get("error"))}


def merge_records(records: list[dict[str, Any]], expected: list[int]) -> dict[int, dict[str, Any]]:
    """One record per expected index, or an error listing what is missing, duplicated or foreign.

    Failed records are kept only when no successful record exists for the index.
    """
    ok: dict[int, list[dict]] = defaultdict(list)
    failed: dict[int, dict] = {}
    for r in records:
        index = int(r["index"])
        if r.get("error"):
            failed[index] = r
        else:
            ok[index].append(r)
    expected_set = set(expected)
    missing = [i for i in expected if i not in ok and i not in failed]
    dupes = sorted(i for i, rs in ok.items() if len(rs) > 1)
    foreign = sorted(i for i in set(ok) | set(failed) if i not in expected_set)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {_few(missing)})")
    if dupes:
        problems.append(f"{len(dupes)} predicted more than once ({_few(dupes)})")
    if foreign:
        problems.append(f"{len(foreign)} not in the benchmark ({_few(foreign)})")
    if problems:
        raise DdpEvalError("merged shards are incomplete or inconsistent: " + "; ".join(problems))
    return {i: ok[i][0] if i in ok else failed[i] for i in expected}


def _few(items: list[int], n: int = 10) -> str:
    shown = ", ".join(map(str, items[:n]))
    return shown + (", ..." if len(items) > n else "")
