"""The benchmark as the rest of ddp_eval sees it: plain samples, an image store, the source table."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
from PIL import Image

from ddp_eval.errors import DdpEvalError

OPTION_LETTERS = tuple(string.ascii_uppercase)


@dataclass(frozen=True)
class Sample:
    index: int
    question: str
    hint: str | None
    options: dict[str, str]  # letter -> text exactly as the prompt shows it
    answer: str | None
    category: str | None
    l2_category: str | None
    image_key: int  # which stored image this row shows (rows may share one)


class ImageStore(Protocol):
    def open(self, key: int) -> Image.Image: ...

    def size(self, key: int) -> tuple[int, int]: ...

    def describe(self, key: int) -> str: ...


@dataclass
class Benchmark:
    name: str
    source: str
    table: pd.DataFrame  # the benchmark's columns without images, one row per sample, file order
    samples: list[Sample]
    images: ImageStore

    def __post_init__(self) -> None:
        self.by_index = {s.index: s for s in self.samples}


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def samples_from_table(table: pd.DataFrame, image_keys: list[int], source: str) -> list[Sample]:
    """Build samples the way VLMEvalKit reads a row: NaN option cells are absent, NaN hint is no hint."""
    _check_columns(table, source)
    indices = [as_index(v, source, pos) for pos, v in enumerate(table["index"])]
    _check_unique(indices, source)
    letters = [c for c in OPTION_LETTERS if c in table.columns]
    samples = []
    for pos, row in enumerate(table.to_dict("records")):
        options = {c: str(row[c]) for c in letters if not is_missing(row[c])}
        answer = None if is_missing(row.get("answer")) else str(row["answer"]).strip()
        if answer is not None and answer not in options:
            raise DdpEvalError(
                f"{source}: row index {indices[pos]} has answer {answer!r}, which is not among its options "
                f"{sorted(options)}"
            )
        samples.append(
            Sample(
                index=indices[pos],
                question=str(row["question"]),
                hint=None if is_missing(row.get("hint")) else str(row["hint"]),
                options=options,
                answer=answer,
                category=_opt_str(row.get("category")),
                l2_category=_opt_str(row.get("l2-category")),
                image_key=image_keys[pos],
            )
        )
    if not samples:
        raise DdpEvalError(f"{source}: the benchmark has no rows")
    return samples


def _opt_str(value: Any) -> str | None:
    return None if is_missing(value) else str(value)


def _check_columns(table: pd.DataFrame, source: str) -> None:
    missing = [c for c in ("index", "question") if c not in table.columns]
    if not any(c in table.columns for c in ("A", "B")):
        missing.append("A/B (option columns)")
    if missing:
        raise DdpEvalError(
            f"{source}: missing required column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}"
        )


def as_index(value: Any, source: str, pos: int) -> int:
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError):
        raise DdpEvalError(f"{source}: row {pos + 1} has a non-integer index {value!r}") from None


def _check_unique(indices: list[int], source: str) -> None:
    seen: set[int] = set()
    dupes = sorted({i for i in indices if i in seen or seen.add(i)})
    if dupes:
        shown = ", ".join(map(str, dupes[:20]))
        raise DdpEvalError(f"{source}: duplicate index value(s) {shown}; every row needs its own index")
