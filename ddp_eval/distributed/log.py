"""Logging with the rank in every line's prefix."""

from __future__ import annotations

import logging


class RankFilter(logging.Filter):
    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__()
        self.prefix = f"[rank {rank}/{world_size}]"

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.prefix
        return True


def setup_logging(rank: int, world_size: int, quiet: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RankFilter(rank, world_size))
    handler.setFormatter(logging.Formatter("%(asctime)s %(rank)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("ddp_eval")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False
