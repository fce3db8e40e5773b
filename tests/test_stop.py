"""The stop flag: one request per stop, whatever the number of SIGTERMs; a second Ctrl-C ends at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ddp_eval.distributed.stop import StopFlag, Stopped


def test_repeated_sigterm_is_one_request_to_stop_after_the_batch_in_flight():
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # SLURM's own, then the launcher's forward
        assert stop.signum == signal.SIGTERM
        with pytest.raises(Stopped, match="SIGTERM"):
            stop.check("after the batch")


def test_second_ctrl_c_ends_the_process_at_once():
    code = textwrap.dedent("""
        import os, signal, time
        from ddp_eval.distributed.stop import StopFlag
        with StopFlag():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        print("not reached")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGINT and "not reached" not in done.stdout
