"""Reading table cells the way VLMEvalKit does (pandas' missing values, integer indices); pure."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ddp_eval.errors import DdpEvalError


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def optional_str(value: Any) -> str | None:
    return None if is_missing(value) else str(value)


def as_index(value: Any, source: str, pos: int) -> int:
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError):
        raise DdpEvalError(f"{source}: row {pos + 1} has a non-integer index {value!r}") from None


def check_unique(indices: list[int], source: str) -> None:
    seen: set[int] = set()
    dupes = sorted({i for i in indices if i in seen or seen.add(i)})
    if dupes:
        shown = ", ".join(map(str, dupes[:20]))
        raise DdpEvalError(f"{source}: duplicate index value(s) {shown}; every row needs its own index")


def check_columns(table: pd.DataFrame, needed: list[str], source: str) -> None:
    """An error naming the missing and the found columns."""
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DdpEvalError(
            f"{source}: missing required column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}"
        )
