"""One run per output dir (store/lock.py) and ranks that end with their launcher (distributed/launcher.py).

Every test uses real processes: record locks and parent-death signals are per-process kernel state.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ddp_eval.distributed import launcher as launcher_watch
from ddp_eval.errors import DdpEvalError
from ddp_eval.store import lock as lock_module
from ddp_eval.store.lock import HOLDER_MAX_BYTES, LOCK_FILE_NAME, OutputDirLock, read_holder

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 5.0
START_S = 60.0  # a fresh interpreter on a loaded 2-core CI machine: only a failing test waits this long
_PENDING: dict[int, bytes] = {}  # bytes read past the last line, per child pid

HOLD = """
import json, sys
from pathlib import Path
from ddp_eval.store.lock import OutputDirLock
lock = OutputDirLock(Path(sys.argv[1]), {"command": "ddp-eval run cfg.yaml"}).acquire()
print(json.dumps(lock.record), flush=True)
sys.stdin.read()  # hold until the test closes stdin (or kills us)
"""

TRY = """
import sys
from pathlib import Path
from ddp_eval.errors import DdpEvalError
from ddp_eval.store import lock as lock_module
from ddp_eval.store.lock import OutputDirLock
try:
    OutputDirLock(Path(sys.argv[1])).acquire().release()
except DdpEvalError as exc:
    print(exc)
    sys.exit(3)
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, **kwargs)


def _read_line(proc: subprocess.Popen, timeout: float = START_S) -> str:
    """The child's next stdout line. Reads the pipe's descriptor itself: select() on the buffered
    proc.stdout would wait for new bytes while the lines it waits for already sit in that buffer
    (two children that print at once, read in one chunk)."""
    fd = proc.stdout.fileno()
    pending = _PENDING.pop(proc.pid, b"")
    deadline = time.monotonic() + timeout
    while b"\n" not in pending:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0.0))
        assert ready, f"no output from pid {proc.pid} within {timeout} s (so far {pending!r})"
        chunk = os.read(fd, 4096)
        assert chunk, f"pid {proc.pid} closed its stdout (so far {pending!r})"
        pending += chunk
    line, _, _PENDING[proc.pid] = pending.partition(b"\n")
    return line.decode().strip()


def _end(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT_S)


def _try_in_other_process(out: Path) -> tuple[int, str]:
    proc = _python(TRY, str(out))
    try:
        stdout, _ = proc.communicate(timeout=START_S)
    finally:
        _end(proc)
    return proc.returncode, stdout.strip()


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path/out's lock; yields (process, the record it wrote)."""
    proc = _python(HOLD, str(tmp_path / "out"), stdin=subprocess.PIPE)
    try:
        yield proc, json.loads(_read_line(proc))
    finally:
        _end(proc)


def test_second_run_is_refused_and_told_host_pid_and_start_time(tmp_path, holder):
    proc, record = holder
    assert record["pid"] == proc.pid and record["command"] == "ddp-eval run cfg.yaml"
    with pytest.raises(DdpEvalError) as caught:
        OutputDirLock(tmp_path / "out").acquire()
    message = str(caught.value)
    assert message == (f"run.output_dir {tmp_path / 'out'} is in use by another run (host {socket.gethostname()}, "
                       f"pid {proc.pid}, started {record['started']}); wait for it to finish or use another "
                       "run.output_dir")


def test_lock_is_free_at_once_when_the_holder_is_killed(tmp_path, holder):
    proc, _ = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=WAIT_S)
    assert read_holder(tmp_path / "out") is None
    with OutputDirLock(tmp_path / "out") as lock:
        assert lock.record["pid"] == os.getpid()


def test_release_lets_another_process_lock_and_then_this_one_again(tmp_path):
    lock = OutputDirLock(tmp_path / "out")
    lock.acquire()
    assert _try_in_other_process(tmp_path / "out")[0] == 3
    lock.release()
    assert _try_in_other_process(tmp_path / "out") == (0, "")
    lock.acquire()
    try:
        assert _try_in_other_process(tmp_path / "out")[0] == 3
    finally:
        lock.release()
    assert (tmp_path / "out" / LOCK_FILE_NAME).exists()  # never deleted: see the module docstring


@pytest.mark.parametrize("content", [b"", b"\xff\xfe not json \x00", b"[1, 2]", b"{" + b" " * 10_000])
def test_unreadable_holder_record_still_refuses_with_a_one_line_message(tmp_path, holder, content):
    (tmp_path / "out" / LOCK_FILE_NAME).write_bytes(content)  # advisory lock: this process may write
    with pytest.raises(DdpEvalError) as caught:
        OutputDirLock(tmp_path / "out").acquire()
    message = str(caught.value)
    assert "is in use by another run (holder unknown: " in message and "\n" not in message
    assert read_holder(tmp_path / "out").problem


def test_same_process_cannot_lock_twice_and_the_refusal_keeps_the_lock(tmp_path):
    with OutputDirLock(tmp_path / "out") as lock:
        with pytest.raises(RuntimeError, match="already locked by this OutputDirLock"):
            lock.acquire()
        with pytest.raises(RuntimeError, match="another OutputDirLock in this process"):
            OutputDirLock(tmp_path / "out").acquire()
        assert read_holder(tmp_path / "out").record == lock.record  # from memory, the file stays unopened
        assert _try_in_other_process(tmp_path / "out")[0] == 3
    assert not lock.held
    lock.release()  # releasing twice does nothing


@pytest.mark.parametrize("probe", ["F_GETLK", "shared lock"])
def test_read_holder_names_a_holder_in_another_process(tmp_path, holder, monkeypatch, probe):
    if probe == "shared lock":  # what systems other than 64-bit Linux use
        monkeypatch.setattr(lock_module, "_FLOCK_FORMAT", None)
    proc, record = holder
    assert read_holder(tmp_path / "out").record == record
    assert _try_in_other_process(tmp_path / "out")[0] == 3  # asking took nothing away from the holder


def test_read_holder_is_none_for_a_fresh_or_released_dir_and_creates_nothing(tmp_path):
    assert read_holder(tmp_path / "fresh") is None
    assert not (tmp_path / "fresh").exists()
    with OutputDirLock(tmp_path / "out"):
        pass
    assert read_holder(tmp_path / "out") is None


def test_holder_fields_too_large_are_left_out_but_identity_is_kept(tmp_path):
    with OutputDirLock(tmp_path / "big", {"command": "x" * HOLDER_MAX_BYTES}) as lock:
        assert lock.record["pid"] == os.getpid() and "command" not in lock.record
    with pytest.raises(ValueError, match="filled in by OutputDirLock"):
        OutputDirLock(tmp_path / "out", {"pid": 1})


WATCHED_CHILD = """
import sys, time
from ddp_eval.distributed.launcher import end_with_parent
if sys.argv[1] == "watch":
    assert end_with_parent()
print("ready", flush=True)
time.sleep(30)
"""

LAUNCHER = """
import subprocess, sys, time
children = [subprocess.Popen([sys.executable, "-c", sys.argv[1], mode], start_new_session=True)
            for mode in ("watch", "no-watch")]
print(" ".join(str(c.pid) for c in children), flush=True)
time.sleep(30)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_rank_in_its_own_session_ends_when_its_launcher_is_killed():
    launcher = _python(LAUNCHER, textwrap.dedent(WATCHED_CHILD))
    children: list[int] = []
    try:
        children = [int(pid) for pid in _read_line(launcher).split()]
        # Both children print "ready\n" on our stdout, each in one write.
        assert [_read_line(launcher) for _ in range(2)] == ["ready", "ready"]
        watched, unwatched = children
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=WAIT_S)
        deadline = time.monotonic() + START_S
        while _alive(watched) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(watched), "the child that asked to end with its parent is still running"
        assert _alive(unwatched)  # without end_with_parent a rank outlives torchrun: the bug this fixes
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _end(launcher)


SELF_SIGNAL = """
import os, signal
from ddp_eval.distributed.launcher import end_with_parent
got = []
signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
parents = iter([os.getppid(), 1])  # the parent dies (we are adopted) while the request is being made
os.getppid = lambda: next(parents)
assert end_with_parent(signal.SIGUSR1)
assert got == [signal.SIGUSR1], got
print("signalled", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_signal_is_sent_at_once_when_the_parent_died_during_the_request():
    proc = _python(SELF_SIGNAL)
    try:
        assert proc.communicate(timeout=START_S)[0].strip() == "signalled" and proc.returncode == 0
    finally:
        _end(proc)


def test_end_with_parent_does_nothing_off_linux(monkeypatch):
    monkeypatch.setattr(launcher_watch.sys, "platform", "darwin")
    assert launcher_watch.end_with_parent() is False
