"""Graceful stop on SIGTERM / SIGINT (SLURM preemption, Ctrl-C): finish and write the batch in
flight, then leave with a non-zero status. A second Ctrl-C (SIGINT) stops at once; shards stay valid
because each batch is one append of whole lines. A repeated SIGTERM is the same request again, not an
order to hurry: SLURM signals every process of a job and launchers forward the signal once more, so a
rank may see two TERMs for one stop (SIGKILL remains the way to end a rank at once).
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """Raised between batches after a stop signal; the CLI exits with 128 + signal number."""

    def __init__(self, signum: int, detail: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}: {detail}")
        self.signum = signum


class StopFlag:
    """Install with `with StopFlag() as stop:`; call `stop.check(detail)` between batches."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGTERM:
                log.info("SIGTERM again: still finishing the batch in flight")
                return
            log.error("second %s: stopping now", signal.Signals(signum).name)
            os._exit(128 + signum)
        self.signum = signum
        log.warning("%s received: finishing the batch in flight, then stopping", signal.Signals(signum).name)

    def check(self, detail: str) -> None:
        if self.signum is not None:
            raise Stopped(self.signum, detail)

    def __enter__(self) -> StopFlag:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """For DataLoader workers: the main process decides when to stop, not Ctrl-C reaching a worker."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stop_at_once_on_signals() -> None:
    """Outside the prediction loop (loading the benchmark, the processor, the model; scoring) nothing is
    in flight: a stop signal raises `Stopped` where the process is, so it leaves with 128 + the
    signal number and says how to resume, instead of dying silently by the signal."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum, "stopped outside prediction; predictions written so far are kept; re-run the same "
                              "command to resume")

    for sig in SIGNALS:
        signal.signal(sig, handle)
