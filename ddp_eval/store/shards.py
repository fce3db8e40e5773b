"""Per-rank JSONL shard files: a header line, then one line per sample, one write per batch.

One rule decides what a shard holds, for the reader and the writer alike (`parse_line`): a line is a
record when it is UTF-8 JSON holding an object with an integer `index` (or the header). A last line
without its newline that is a whole record counts, and the writer appends the missing newline before it
appends more; a last line that is not a whole record (a write cut by a crash) does not count, and the
writer cuts it, so its sample is simply predicted again. Whatever is counted done stays on disk.

A sample that failed (bad image, OOM at batch size 1) has a record with an `error`; a later successful
record for the same index supersedes it. Two successful records for one index (an older version's, or
two runs that wrote to one output dir) are not fatal: the first in shard-file order, then line order,
counts, with a warning naming the files.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddp_eval.errors import DdpEvalError
from ddp_eval.store.identity import differences

log = logging.getLogger(__name__)

SHARD_DIR = "shards"
HEADER_KEY = "ddp_eval_shard"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def shard_path(output_dir: Path, rank: int, world_size: int) -> Path:
    return output_dir / SHARD_DIR / f"rank{rank:03d}-of-{world_size:03d}.jsonl"


def parse_line(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """(record, "") when the line is a whole record or header, else (None, what is wrong with it)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError:
        return None, "not valid JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if HEADER_KEY in record:
        return (record, "") if isinstance(record.get("identity"), dict) else (None, "a header without the identity")
    index = record.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        return None, "a record without an integer index"
    return record, ""


def _split_tail(data: bytes) -> tuple[bytes, bytes]:
    """(the lines ended by a newline, what follows the last newline)."""
    end = data.rfind(b"\n") + 1
    return data[:end], data[end:]


def _repair_tail(path: Path) -> None:
    """Before appending: end a whole last record with its newline, cut a last line that is not one."""
    if not path.exists():
        return
    if not path.is_file():  # opening a FIFO would block
        raise DdpEvalError(f"{path}: not a regular file, so not a shard; remove it")
    if path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        body, tail = _split_tail(f.read())
        if not tail:
            return
        if parse_line(tail)[0] is not None:
            log.warning("%s: the last record lacks its newline; appending it", path)
            f.write(b"\n")
        else:
            log.warning("%s: dropping a cut last line (%d bytes); its sample will be predicted again",
                        path, len(tail))
            f.truncate(len(body))
        f.flush()
        os.fsync(f.fileno())


def _write_error(path: Path, err: OSError) -> str:
    resume = "re-run the same command to resume (predictions written so far are kept)"
    if err.errno in DISK_FULL:
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
        except OSError:
            free = "free space unknown"
        what = "the disk is full" if err.errno == errno.ENOSPC else "the disk quota is exceeded"
        return f"{path}: cannot write predictions, {what} ({free} on {path.parent}); free some space and {resume}"
    return f"{path}: cannot write predictions ({err.strerror or err}); fix that and {resume}"


class ShardWriter:
    """Appends records to this rank's shard; each batch is one write, fsynced.

    A write that fails (full disk, quota) is undone, the shard cut back to its size before the batch, and
    raised as a DdpEvalError naming the shard and the free space.
    """

    def __init__(self, path: Path, identity: dict[str, Any] | None = None) -> None:
        self.path = path
        self._fd: int | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _repair_tail(path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fresh = os.fstat(self._fd).st_size == 0
        except OSError as err:
            self.close()
            raise DdpEvalError(_write_error(path, err)) from None
        if fresh and identity is not None:
            try:
                self._append([{HEADER_KEY: 1, "identity": identity}])
            except DdpEvalError:
                self.close()
                raise

    def _append(self, records: Iterable[dict[str, Any]]) -> None:
        # backslashreplace: a lone surrogate in a reply becomes its JSON escape (valid UTF-8, same string read back)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8", "backslashreplace")
        before = None
        try:
            before = os.fstat(self._fd).st_size
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
            os.fsync(self._fd)
        except OSError as err:
            if before is not None:
                self._cut_back(before)
            raise DdpEvalError(_write_error(self.path, err)) from None

    def _cut_back(self, size: int) -> None:
        """Best effort: no half batch is left behind (were it left, the reader would drop its cut line)."""
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError as err:
            log.warning("%s: cannot cut a failed write back to %d bytes (%s)", self.path, size, err.strerror or err)

    def write_batch(self, records: Iterable[dict[str, Any]]) -> None:
        self._append(records)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ShardContents:
    records: list[dict[str, Any]] = field(default_factory=list)
    identities: dict[Path, dict[str, Any]] = field(default_factory=dict)
    origins: list[Path] = field(default_factory=list)  # the shard file of each record, parallel to `records`


def read_shard(path: Path, into: ShardContents) -> None:
    try:
        body, tail = _split_tail(path.read_bytes())
    except OSError as err:
        raise DdpEvalError(f"{path}: cannot read the shard ({err.strerror or err})") from None
    lines = body.split(b"\n")[:-1]
    headed = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record, problem = parse_line(line)
        if record is None:
            what = "delete the shard (its rows are predicted again)" if not headed else \
                "delete the line (its row is predicted again) or the shard"
            raise DdpEvalError(f"{path}, line {number}: {problem}; the shard is damaged: {what}")
        headed = headed or _headed(record, path, number)
        _add(record, path, into)
    if tail:
        record, _ = parse_line(tail)
        if record is None:  # cut by a crash mid-write: predicted again (the writer cuts it before appending)
            log.warning("%s: ignoring a cut last line (%d bytes)", path, len(tail))
        else:
            headed or _headed(record, path, len(lines) + 1)
            _add(record, path, into)


def _headed(record: dict[str, Any], path: Path, number: int) -> bool:
    """True for the header; a record before any header is an error: without the run identity nothing says
    which benchmark, model and settings its rows were predicted with."""
    if HEADER_KEY in record:
        return True
    raise DdpEvalError(f"{path}, line {number}: a record before the shard's header line (the run identity), so "
                       "nothing says which run predicted its rows; delete the shard (its rows are predicted again)")


def _add(record: dict[str, Any], path: Path, into: ShardContents) -> None:
    if HEADER_KEY in record:
        into.identities[path] = record["identity"]
    else:
        into.records.append(record)
        into.origins.append(path)


def read_shards(output_dir: Path) -> ShardContents:
    contents = ShardContents()
    folder = output_dir / SHARD_DIR
    if folder.is_dir():
        for path in sorted(folder.glob("*.jsonl")):
            if not path.is_file():  # a FIFO would block the read, a directory fail it
                raise DdpEvalError(f"{path}: not a regular file, so not a shard; remove it")
            read_shard(path, contents)
    return contents


def empty_foreign_shards(contents: ShardContents, identity: dict[str, Any]) -> list[Path]:
    """Shards of another run that hold no prediction (it stopped before its first batch, e.g. at model load):
    nothing in them is lost when a run of other settings replaces them."""
    holding = set(contents.origins)
    return [path for path, theirs in contents.identities.items()
            if path not in holding and differences(identity, theirs)]


def check_identity(contents: ShardContents, identity: dict[str, Any], output_dir: Path,
                   ignore: list[Path] = ()) -> None:
    """Refuse shards written for another benchmark, model or generation setting (but those in `ignore`)."""
    for path, theirs in contents.identities.items():
        if path in ignore:
            continue
        diff = differences(identity, theirs)
        if diff:
            raise DdpEvalError(
                f"{output_dir} holds shards of another run ({path.name}: {'; '.join(diff)}); "
                f"use another run.output_dir, or delete {output_dir / SHARD_DIR} to start over"
            )


def pick_records(records: list[dict[str, Any]], origins: list[Path] | None = None) -> dict[int, dict[str, Any]]:
    """Index -> the one record that counts: the first successful one (shard-file order, then line order),
    else the last failed one. Extra successful records are logged, naming the shard files, and dropped."""
    ok: dict[int, dict[str, Any]] = {}
    failed: dict[int, dict[str, Any]] = {}
    first_origin: dict[int, Path | None] = {}
    dupes: set[int] = set()
    differing: set[int] = set()
    files: set[Path] = set()
    for k, r in enumerate(records):
        index = int(r["index"])
        origin = origins[k] if origins is not None and k < len(origins) else None
        if r.get("error"):
            failed[index] = r
        elif index in ok:
            dupes.add(index)
            files.update(p for p in (first_origin[index], origin) if p is not None)
            if r.get("prediction") != ok[index].get("prediction"):
                differing.add(index)
        else:
            ok[index] = r
            first_origin[index] = origin
    if dupes:
        where = f" in {', '.join(str(p) for p in sorted(files))}" if files else ""
        log.warning("%d rows have more than one successful record (index %s)%s; keeping the first of each "
                    "in shard-file then line order (%d of them with another prediction); was a second run "
                    "writing to this output dir?", len(dupes), _few(sorted(dupes)), where, len(differing))
    return {**failed, **ok}


def done_indices(contents: ShardContents, retry_failed: bool = False) -> set[int]:
    """Rows not to predict again: all recorded rows, or only the successful ones with retry_failed.
    The records that count are those `merge_records` keeps (`pick_records`)."""
    picked = pick_records(contents.records, contents.origins)
    return {i for i, r in picked.items() if not (retry_failed and r.get("error"))}


def merge_records(records: list[dict[str, Any]], expected: list[int],
                  origins: list[Path] | None = None) -> dict[int, dict[str, Any]]:
    """One record per expected index (`pick_records`), or an error listing what is missing or foreign."""
    picked = pick_records(records, origins)
    expected_set = set(expected)
    missing = [i for i in expected if i not in picked]
    foreign = sorted(i for i in picked if i not in expected_set)
    problems, todo = [], []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {_few(missing)})")
        todo.append("re-run the same command to predict the missing rows")
    if foreign:
        problems.append(f"{len(foreign)} not in the benchmark ({_few(foreign)})")
        todo.append("use another run.output_dir for this benchmark")
    if problems:
        raise DdpEvalError(f"merged shards are incomplete or inconsistent: {'; '.join(problems)}; {', or '.join(todo)}")
    return {i: picked[i] for i in expected}


def _few(items: list[int], n: int = 10) -> str:
    shown = ", ".join(map(str, items[:n]))
    return shown + (", ..." if len(items) > n else "")
