"""Reading table cells the way VLMEvalKit does (pandas' missing values, indices, printed lists); pure."""

from __future__ import annotations

import ast
import numbers
import re
from collections.abc import Sequence
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


def integer_index(value: Any) -> int | None:
    """The integer an index cell holds (3, 3.0, "3"), else None ("VD_chart_1_0_0_0", 2.5, missing)."""
    if isinstance(value, bool) or is_missing(value):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)  # exact, however long (a float would merge indices above 2**53)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    # inf and nan are no integers; a float beyond 2**53 no longer says which integer it was
    return int(number) if number.is_integer() and abs(number) < 2**53 else None


def sample_indices(values: Sequence[Any], source: str) -> list[int]:
    """Each row's `Sample.index`: the index column's values when all are integers (MMBench keys its
    circular copies by them), else the row positions. The table keeps the original column either way,
    so a string index (HallusionBench encodes set, figure and question in it) reaches scoring and
    predictions.tsv unchanged."""
    check_unique(list(values), source)
    numbers = [integer_index(v) for v in values]
    if all(n is not None for n in numbers):
        check_unique(numbers, source)
        return numbers
    return list(range(len(values)))


def check_index_column(values: Sequence[Any], source: str) -> None:
    """Every row has an index, no index twice, and a numeric column holds whole numbers: an empty cell or
    a 4.5 among integers would turn every index into text and lose MMBench's circular copies unnoticed."""
    empty = [pos for pos, v in enumerate(values) if is_missing(v) or (isinstance(v, str) and not v.strip())]
    if empty:
        lines = ", ".join(str(pos + 2) for pos in empty[:10])
        raise DdpEvalError(f"{source}: {len(empty)} row(s) with an empty index cell (line {lines}); every row "
                           "needs its own index")
    numeric = all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in values)
    fractions = [v for v in values if integer_index(v) is None] if numeric else []
    if fractions:
        shown = ", ".join(map(str, fractions[:10]))
        raise DdpEvalError(f"{source}: index value(s) {shown} are not whole numbers, in a column of numbers; "
                           "every index must be an integer (or every one a text)")
    check_unique(list(values), source)


def check_unique(indices: list, source: str) -> None:
    seen: set = set()
    dupes = sorted({str(i) for i in indices if i in seen or seen.add(i)})
    if dupes:
        shown = ", ".join(dupes[:20])
        raise DdpEvalError(f"{source}: duplicate index value(s) {shown}; every row needs its own index")


def cell_list(text: str) -> list[str]:
    """VLMEvalKit's `toliststr`: a cell printed as a Python list ("['aGVs...', 'bG8...']") gives its items
    as text, any other text is one item. Parsed with ast.literal_eval, never eval; ValueError if the
    brackets hold no list of plain values."""
    if len(text) > 1 and text[0] == "[" and text[-1] == "]":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ValueError("starts with [ and ends with ] but is no Python list of plain values") from None
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"starts with [ and ends with ] but holds a {type(value).__name__}, not a list")
        return [str(x) for x in value]
    return [text]


def check_columns(table: pd.DataFrame, needed: list[str], source: str, who: str = "") -> None:
    """An error naming the missing and the found columns (and who needs them)."""
    missing = [c for c in needed if c not in table.columns]
    if missing:
        needs = f" ({who} needs {', '.join(needed)})" if who else ""
        raise DdpEvalError(
            f"{source}: missing required column(s) {', '.join(missing)}{needs}; "
            f"found {', '.join(map(str, table.columns))}"
        )
