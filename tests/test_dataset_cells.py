"""A `datasets` file and a TSV holding the same rows give the same samples: text cells that pandas'
read_csv reads as missing ("nan", "NA", "", "None", ...) are missing in both."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from pandas._libs.parsers import STR_NA_VALUES
from PIL import Image

from ddp_eval.config import DataConfig
from ddp_eval.tasks.load import load_benchmark
from ddp_eval.tasks.mcq.prompt import question_and_options

NA_TEXTS = sorted(STR_NA_VALUES)  # "", "#N/A", "N/A", "NA", "NaN", "None", "n/a", "nan", "null", ...


def png(width: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, 30), "red").save(buf, format="PNG")
    return buf.getvalue()


def rows() -> list[dict]:
    """One row per NA text in the hint, an option, category and l2-category; then rows with real text."""
    out = []
    for i, na in enumerate([*NA_TEXTS, "h", " nan", "nan "]):  # padded: not NA for read_csv either
        out.append({"index": i, "question": f"q{i}", "hint": na, "A": "x", "B": "y", "C": na,
                    "answer": "A", "category": na, "l2-category": None if i % 2 else na, "image": png(40 + i)})
    return out


@pytest.fixture
def both(tmp_path):
    import base64

    import datasets

    data = rows()
    tsv = tmp_path / "b.tsv"
    pd.DataFrame([{**r, "image": base64.b64encode(r["image"]).decode()} for r in data]).to_csv(
        tsv, sep="\t", index=False)
    ds = datasets.Dataset.from_list([{**r, "image": {"bytes": r["image"], "path": None}} for r in data])
    ds.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "b.parquet"))
    return load_benchmark(DataConfig(path=str(tsv))), load_benchmark(DataConfig(path=str(tmp_path / "b.parquet")))


def test_tsv_and_parquet_of_the_same_rows_give_identical_samples(both):
    from_tsv, from_parquet = both
    assert len(from_tsv.samples) == len(NA_TEXTS) + 3
    assert from_parquet.samples == from_tsv.samples


def test_a_missing_hint_in_a_dataset_never_reaches_the_prompt_as_text(both):
    _, from_parquet = both
    na_rows = from_parquet.samples[:len(NA_TEXTS)]
    assert all(s.hint is None and "C" not in s.options and s.category is None for s in na_rows)
    assert not any(question_and_options(s).startswith("Hint:") for s in na_rows)
    real = from_parquet.samples[len(NA_TEXTS):]
    assert [s.hint for s in real] == ["h", " nan", "nan "] and real[0].options["C"] == "h"
