"""torchrun's environment variables, read here and in `distributed.group` only (light: no torch import)."""

from __future__ import annotations

from collections.abc import Mapping


def launched_by_torchrun(env: Mapping[str, str]) -> bool:
    return "TORCHELASTIC_RUN_ID" in env or "LOCAL_RANK" in env


def env_rank(env: Mapping[str, str]) -> int:
    """This process's global rank (0 outside torchrun, or when RANK is not a number)."""
    try:
        return int(env.get("RANK", "0"))
    except ValueError:
        return 0
