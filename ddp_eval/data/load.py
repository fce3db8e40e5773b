"""A local benchmark file or directory -> its rows, whatever the format (TSV / XLSX, `datasets`)."""

from __future__ import annotations

from pathlib import Path

from ddp_eval.data.rows import RawRows
from ddp_eval.errors import DdpEvalError

FORMATS = ("auto", "tsv", "hf_dataset")


def detect_format(path: Path) -> str:
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return "hf_dataset"
    return "tsv"


def load_rows(path: Path, fmt: str = "auto", limit: int | None = None) -> RawRows:
    if not path.exists():
        raise DdpEvalError(f"data.path: benchmark not found at {path}")
    fmt = detect_format(path) if fmt == "auto" else "tsv" if fmt == "mmbench_tsv" else fmt
    if fmt == "hf_dataset":
        from ddp_eval.data.hf_dataset import load_hf_dataset

        return load_hf_dataset(path, limit)
    from ddp_eval.data.tsv import load_tsv

    return load_tsv(path, limit)
