"""One progress bar on rank 0 for the whole job: it counts the records every rank appends to its shard.

Ranks share the output dir (as gathering needs), so rank 0 follows the shard files instead of
sending messages between ranks; each file is read only from where the last poll stopped.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tqdm import tqdm

from ddp_eval.store.shards import SHARD_DIR

RECORD_START = b'{"index"'


class JobProgress:
    """`with JobProgress(output_dirs, total_rows):` shows rows/s and ETA for all ranks together (and all
    benchmarks of a suite: one output dir each)."""

    def __init__(self, output_dirs: Path | list[Path], total: int, poll_s: float = 0.5, enabled: bool = True) -> None:
        dirs = [output_dirs] if isinstance(output_dirs, Path) else list(output_dirs)
        self.folders = [d / SHARD_DIR for d in dirs]
        self.total = total
        self.poll_s = poll_s
        self.enabled = enabled and total > 0
        self._offsets: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bar: tqdm | None = None

    def _scan(self, start: bool = False) -> int:
        """New records since the last scan (at `start`, only remember where the files end)."""
        new = 0
        for path in sorted(p for folder in self.folders for p in folder.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            cut = chunk.rfind(b"\n") + 1  # count whole lines only
            if not start:
                new += sum(1 for line in chunk[:cut].split(b"\n") if line.startswith(RECORD_START))
            self._offsets[path] = offset + cut
        return new

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.bar.update(self._scan())

    def __enter__(self) -> JobProgress:
        if self.enabled:
            self._scan(start=True)
            self.bar = tqdm(total=self.total, unit="row", desc="all ranks", smoothing=0.1)
            self._thread = threading.Thread(target=self._run, name="ddp_eval-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.bar.update(self._scan())
            self.bar.close()
