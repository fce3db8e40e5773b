"""One run per output dir: an exclusive POSIX record lock on `<run.output_dir>/.ddp_eval.lock`.

Two runs appending to the same shard files predict rows twice, so a run takes this lock before it writes
anything there and keeps it until it ends. A record lock (`fcntl.lockf`, which is fcntl(F_SETLK), not
flock(2)) because:
- the kernel drops it when the holder dies, however it dies (kill -9 included): no stale lock to clean up;
- NFS (v4 natively, v3 through lockd) and Lustre (mounted with `flock`) make it visible on every host,
  whereas what flock(2) does on NFS has changed between kernel versions.
The holder writes who it is (host, pid, start time and what the caller adds, e.g. the command line) into the
file, so that a second run is told whom it is waiting for. The file stays after release: deleting it would
race with a process that has just opened it, which would then lock a file that nobody else sees.

Record locks belong to a process, not to a file descriptor:
- a second lock request from the same process succeeds (a process never conflicts with itself);
- closing *any* descriptor of the file in that process drops the lock, even one opened for a quick read.
So this module keeps a table of the lock files this process holds: a second `OutputDirLock` on a held file
is refused, and `read_holder` answers from memory instead of opening the file. Nothing else in the holding
process may open the lock file. fork() does not pass the lock on: DataLoader workers hold none, and their
closing the inherited descriptor does not release the parent's lock.

Shared file systems:
- NFS mounted with `nolock` keeps locks local to one client host: two hosts would both get the lock.
- NFSv4 locks are leases: if the holder's *host* dies or loses the server, the lock is freed after the lease
  time (90 s by default), not at once; a dead *process* on a live host frees it at once.
- Lustre needs the `flock` mount option for cluster-wide locks; with `localflock` they are node-local, and
  with `noflock` locking fails and the run is refused with a message saying so.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddp_eval.errors import DdpEvalError

log = logging.getLogger(__name__)

LOCK_FILE_NAME = ".ddp_eval.lock"
HOLDER_MAX_BYTES = 4096  # the holder record is one short JSON line; never read more than this
IDENTITY_FIELDS = ("host", "pid", "started")

_BUSY = (errno.EACCES, errno.EAGAIN)  # what F_SETLK reports when another process holds the lock
# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+ padding)
_FLOCK_FORMAT = "hhqqi4x" if sys.platform.startswith("linux") and struct.calcsize("P") == 8 else None

# (st_dev, st_ino) -> the lock this process holds on that file; see the module docstring for why.
_held: dict[tuple[int, int], OutputDirLock] = {}
_held_guard = threading.Lock()  # also keeps read_holder from closing a descriptor while acquire() is locking
os.register_at_fork(after_in_child=_held.clear)  # a forked child holds no record locks


@dataclass(frozen=True)
class Holder:
    """Who holds an output dir's lock, as the holder recorded it; `problem` says why the record is unreadable."""

    record: dict[str, Any] = field(default_factory=dict)
    problem: str = ""

    def describe(self) -> str:
        if self.problem:
            return f"holder unknown: {self.problem}"
        return ", ".join(f"{key} {_one_line(self.record.get(key, '?'))}" for key in IDENTITY_FIELDS)


class OutputDirLock:
    """`with OutputDirLock(cfg.run.output_dir, {"command": ...}):` or explicit `acquire()` / `release()`.

    `acquire()` never waits: if another process holds the lock it raises DdpEvalError naming the holder.
    A second `acquire()` on a held lock, or a second lock on the same file in this process, is a RuntimeError
    (the kernel would grant it, and releasing either one would silently release both).
    """

    def __init__(self, output_dir: Path, holder: dict[str, Any] | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE_NAME
        self.extra = dict(holder or {})
        clash = sorted(set(self.extra) & set(IDENTITY_FIELDS))
        if clash:
            raise ValueError(f"holder fields {clash} are filled in by OutputDirLock itself")
        self.record: dict[str, Any] | None = None  # what this process wrote, while it holds the lock
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputDirLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this OutputDirLock; release() it first")
        with _held_guard:
            other = _held_by_this_process(self.path)
            if other is not None:
                raise RuntimeError(f"{self.path} is already locked by another OutputDirLock in this process "
                                   f"(pid {os.getpid()}); POSIX record locks are per process, so use that one")
            fd = _open_for_locking(self.output_dir, self.path)
            try:
                _lock_or_refuse(fd, self.output_dir, self.path)
                record = _holder_record(self.extra)
                _write_record(fd, record, self.path)
                key = _file_key(os.fstat(fd))
            except BaseException:
                os.close(fd)  # drops the lock if it was taken
                raise
            self._fd, self._key, self.record = fd, key, record
            _held[key] = self
        log.debug("locked %s", self.path)
        return self

    def release(self) -> None:
        """Unlock and close; the file stays (see the module docstring). Releasing an unheld lock does nothing."""
        if self._fd is None:
            return
        with _held_guard:
            _held.pop(self._key, None)
            fd, self._fd, self._key, self.record = self._fd, None, None, None
            try:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(output_dir: Path) -> Holder | None:
    """Who holds `output_dir`'s lock right now, without taking it (for --dry-run and doctor); None if nobody.

    Safe to call from any process: in the process holding the lock it answers from memory (opening and closing
    the file there would drop the lock). The answer can be stale a moment later; only acquire() decides.
    """
    path = Path(output_dir) / LOCK_FILE_NAME
    with _held_guard:
        own = _held_by_this_process(path)
        if own is not None:
            return Holder(dict(own.record or {}))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DdpEvalError(f"run.output_dir {output_dir}: cannot open {path} ({exc.strerror})") from None
        try:
            if not _locked_by_another_process(fd, Path(output_dir), path):
                return None
            return _read_record(fd, path)
        finally:
            os.close(fd)


def _held_by_this_process(path: Path) -> OutputDirLock | None:
    try:
        return _held.get(_file_key(os.stat(path)))
    except OSError:  # no lock file yet, or no directory to hold one: not held here
        return None


def _file_key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _open_for_locking(output_dir: Path, path: Path) -> int:
    if output_dir.exists() and not output_dir.is_dir():
        raise DdpEvalError(f"run.output_dir {output_dir} is a file, not a folder; choose another run.output_dir")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DdpEvalError(f"run.output_dir: cannot write to {output_dir} (creating {path.name}: {exc.strerror}); "
                           "choose a run.output_dir you can write to") from None


def _lock_or_refuse(fd: int, output_dir: Path, path: Path) -> None:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # whole file (len 0 = to the end, however it grows)
    except OSError as exc:
        if exc.errno not in _BUSY:
            raise _unsupported(output_dir, path, exc) from None
        holder = _read_record(fd, path)
        raise DdpEvalError(f"run.output_dir {output_dir} is in use by another run ({holder.describe()}); "
                           "wait for it to finish or use another run.output_dir") from None


def _locked_by_another_process(fd: int, output_dir: Path, path: Path) -> bool:
    try:
        if _FLOCK_FORMAT is not None:  # F_GETLK asks without taking anything
            query = struct.pack(_FLOCK_FORMAT, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            return struct.unpack(_FLOCK_FORMAT, fcntl.fcntl(fd, fcntl.F_GETLK, query))[0] != fcntl.F_UNLCK
        # Elsewhere probe with a shared lock: for that instant a starting run would be refused.
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return True
        raise _unsupported(output_dir, path, exc) from None
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return False


def _unsupported(output_dir: Path, path: Path, exc: OSError) -> DdpEvalError:
    return DdpEvalError(f"run.output_dir {output_dir}: cannot lock {path} ({exc.strerror}), so nothing would keep "
                        "a second run from writing there; on NFS mount with locking (not `nolock`), on Lustre "
                        "with `-o flock`, or use a run.output_dir on another file system")


def _holder_record(extra: dict[str, Any]) -> dict[str, Any]:
    identity = {"host": socket.gethostname(), "pid": os.getpid(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    record = {**identity, **extra}
    if len(_encode(record)) > HOLDER_MAX_BYTES:
        log.warning("holder fields %s left out of %s: over %d bytes", sorted(extra), LOCK_FILE_NAME,
                    HOLDER_MAX_BYTES)
        record = {**identity, "note": f"extra holder fields left out: over {HOLDER_MAX_BYTES} bytes"}
    return record


def _encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, default=str) + "\n").encode()


def _write_record(fd: int, record: dict[str, Any], path: Path) -> None:
    data = _encode(record)
    try:
        os.ftruncate(fd, 0)  # a reader in between sees an empty file: "no holder recorded yet"
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], written)
        os.fsync(fd)  # other hosts (NFS) read it from the server
    except OSError as exc:
        raise DdpEvalError(f"cannot write the lock holder record {path} ({exc.strerror})") from None


def _read_record(fd: int, path: Path) -> Holder:
    try:
        data = os.pread(fd, HOLDER_MAX_BYTES + 1, 0)
    except OSError as exc:
        return Holder(problem=f"cannot read {path} ({exc.strerror})")
    if not data:
        return Holder(problem=f"no holder recorded in {path} yet (it may be starting right now)")
    if len(data) > HOLDER_MAX_BYTES:
        return Holder(problem=f"{path} is over {HOLDER_MAX_BYTES} bytes, not a holder record")
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError:  # also UnicodeDecodeError
        return Holder(problem=f"{path} does not hold a readable holder record (not JSON)")
    if not isinstance(record, dict):
        return Holder(problem=f"{path} does not hold a readable holder record (not a JSON object)")
    return Holder(record)


def _one_line(value: object, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
