"""A benchmark as a Hugging Face `datasets` dataset on disk (save_to_disk dir or parquet files).

Images come from an Image feature; each row owns its image (no cross-row references). Text cells that
pandas' read_csv reads as missing ("", "nan", "NA", "None", ...) are missing here too (NaN, as read_csv
gives), so a benchmark gives the same rows as a `datasets` file as it does as a TSV (VLMEvalKit's reader).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES  # the strings read_csv reads as NA by default (pandas 1.x-3.x)
from PIL import Image

from ddp_eval.data.images import MAX_IMAGE_BYTES, decode_image, header_size, read_image_file
from ddp_eval.data.rows import RawRows
from ddp_eval.errors import DdpEvalError


def _load(path: Path):
    import datasets

    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
        else:
            files = sorted(str(p) for p in path.glob("*.parquet")) if path.is_dir() else [str(path)]
            if not files:
                raise DdpEvalError(f"{path}: no save_to_disk dataset and no .parquet files in it")
            ds = datasets.load_dataset("parquet", data_files=files, split="train")
    except FileNotFoundError as err:
        raise DdpEvalError(f"dataset not found: {path} ({err})") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise DdpEvalError(f"{path}: holds splits {sorted(ds)}; point data.path at one split's directory")
        ds = next(iter(ds.values()))
    return ds


class DatasetImages:
    def __init__(self, ds, column: str, source: str) -> None:
        import datasets

        self.ds = ds.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        self.column = column
        self.source = source

    def describe(self, key: int) -> str:
        return f"{self.source}, image of row {key}"

    def encoded(self, key: int) -> bytes:
        """The image file's bytes as stored (not decoded)."""
        return self._bytes(key)

    def _bytes(self, key: int) -> bytes:
        cell = self.ds[key][self.column]
        if cell is None:
            raise DdpEvalError(f"{self.describe(key)}: the row has no image")
        if cell.get("bytes"):
            if len(cell["bytes"]) > MAX_IMAGE_BYTES:
                raise DdpEvalError(f"{self.describe(key)}: the image is larger than the {MAX_IMAGE_BYTES // 2**20} "
                                   "MiB (MAX_IMAGE_BYTES) an image may have; shrink or re-encode it")
            return cell["bytes"]
        if cell.get("path"):
            return read_image_file(Path(cell["path"]), self.describe(key))
        raise DdpEvalError(f"{self.describe(key)}: the image cell is empty")

    def open(self, key: int) -> Image.Image:
        return decode_image(self._bytes(key), self.describe(key))

    def size(self, key: int) -> tuple[int, int]:
        return header_size(self._bytes(key), self.describe(key))


def load_hf_dataset(path: Path, limit: int | None = None) -> RawRows:
    import datasets

    source = str(path)
    ds = _load(path)
    image_cols = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
    if not image_cols:
        raise DdpEvalError(f"{source}: no column of type Image; columns are {', '.join(ds.column_names)}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    table = missing_as_read_csv(ds.remove_columns(image_cols).to_pandas())
    images = DatasetImages(ds, image_cols[0], source)
    keys = [(k,) for k in shared_image_keys(images, len(table))]
    return RawRows(name=path.stem, source=source, table=table, image_keys=keys, images=images)


def missing_as_read_csv(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells that read_csv would read as NA (its default na_values), and nulls, become NaN, as in a
    table read_csv returns: the task then reads the same row (a missing hint is no hint, not "Hint: nan")."""
    def cell(value):
        return math.nan if value is None or (isinstance(value, str) and value in STR_NA_VALUES) else value

    for column in table.columns:
        if table[column].dtype == object or pd.api.types.is_string_dtype(table[column]):
            table[column] = table[column].map(cell)
    return table


def shared_image_keys(images: DatasetImages, n_rows: int) -> list[int]:
    """Row -> the first row holding byte-identical image content, so copies share one encoding."""
    first: dict[str, int] = {}
    keys = []
    for row in range(n_rows):
        try:
            digest = hashlib.sha1(images.encoded(row)).hexdigest()
        except DdpEvalError:
            digest = f"unreadable-{row}"  # fails with its reason when its batch is prepared
        keys.append(first.setdefault(digest, row))
    return keys
