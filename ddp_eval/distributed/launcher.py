"""Ranks that end when their launcher dies.

torchrun starts every rank in a session of its own (`Popen(start_new_session=True)` in
torch/distributed/elastic/multiprocessing/subprocess_handler/subprocess_handler.py), so `kill -9` of
torchrun's process group reaches the agent but not the ranks: they run on, still appending to their shards,
and an immediate re-run mixes with them. `end_with_parent()` asks the kernel to signal a rank when its
parent goes away, however the parent goes (SIGKILL included).

Which process is the parent: under torchrun with a script or module (`torchrun ... -m ddp_eval ...`) it is
the torchrun process itself (the elastic agent): `LocalElasticAgent._start_workers` -> `start_processes` ->
`SubprocessContext` -> `SubprocessHandler` -> `subprocess.Popen`, all in the agent's main thread, with no
process in between (`--numa-binding` wraps the command in numactl, which execs it: same process). Callable
entrypoints (`elastic_launch(fn)`, `--run-path`) go through multiprocessing's spawn, again from the agent.

Caveats:
- PR_SET_PDEATHSIG fires when the parent *thread* that forked us exits, not only the parent process. The
  agent forks ranks from its main thread, which lives as long as the agent; a launcher that starts children
  from a short-lived worker thread would get them signalled when that thread ends.
- It is not inherited by the rank's own children (DataLoader workers watch their parent themselves), and
  execve of a set-user-ID or capability binary clears it.
- Under ddp_eval's StopFlag, SIGTERM means "finish the batch in flight, then stop". A rank blocked in a
  collective whose peer is gone only sees it once that call returns (or times out); pass signal.SIGKILL to
  end at once.
- Call it first thing in the rank (before importing torch): a parent that died before the call is caught
  only if it died during the call, since the parent seen at the start is then already the adopter.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Have the kernel send `signum` to this process when its parent thread dies; False where unsupported.

    If the parent has already died by the time the request is in place, the signal is sent at once.
    Returns False, having done nothing, on systems other than Linux or where libc has no prctl.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getppid()
    if prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG, {int(signum)}) failed: {os.strerror(err)}")
    if os.getppid() != parent:  # the parent died before the request took effect: nobody will signal us
        os.kill(os.getpid(), signum)
    return True
