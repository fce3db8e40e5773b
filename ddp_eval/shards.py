"""Per-rank JSONL shard files: append one line per sample, one write per batch; read and merge.

A line cut by a crash mid-write is dropped when reading (and trimmed before appending), so its
sample is simply predicted again.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ddp_eval.errors import DdpEvalError

log = logging.getLogger(__name__)

SHARD_DIR = "shards"


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

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _trim_partial_tail(path)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def write_batch(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_shard(path: Path) -> list[dict[str, Any]]:
    records = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # cut last line: recomputed on resume
                log.warning("%s: ignoring a cut last line", path)
                continue
            raise DdpEvalError(f"{path}, line {number}: not valid JSON; the shard is damaged") from None
    return records


def read_shards(output_dir: Path) -> list[dict[str, Any]]:
    folder = output_dir / SHARD_DIR
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        records.extend(read_shard(path))
    return records


def done_indices(output_dir: Path) -> set[int]:
    return {int(r["index"]) for r in read_shards(output_dir)}


def merge_records(records: list[dict[str, Any]], expected: list[int]) -> dict[int, dict[str, Any]]:
    """One record per expected index, or an error listing what is missing, duplicated or foreign."""
    counts = Counter(int(r["index"]) for r in records)
    expected_set = set(expected)
    missing = [i for i in expected if i not in counts]
    dupes = sorted(i for i, n in counts.items() if n > 1)
    foreign = sorted(i for i in counts if i not in expected_set)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {_few(missing)})")
    if dupes:
        problems.append(f"{len(dupes)} predicted more than once ({_few(dupes)})")
    if foreign:
        problems.append(f"{len(foreign)} not in the benchmark ({_few(foreign)})")
    if problems:
        raise DdpEvalError("merged shards are incomplete or inconsistent: " + "; ".join(problems))
    return {int(r["index"]): r for r in records}


def _few(items: list[int], n: int = 10) -> str:
    shown = ", ".join(map(str, items[:n]))
    return shown + (", ..." if len(items) > n else "")
