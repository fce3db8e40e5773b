"""A benchmark as a Hugging Face `datasets` dataset on disk (save_to_disk dir or parquet files).

Images come from an Image feature; each row owns its image (no cross-row references).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from ddp_eval.data.images import decode_image
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
            return cell["bytes"]
        if cell.get("path"):
            return Path(cell["path"]).read_bytes()
        raise DdpEvalError(f"{self.describe(key)}: the image cell is empty")

    def open(self, key: int) -> Image.Image:
        return decode_image(self._bytes(key), self.describe(key))

    def size(self, key: int) -> tuple[int, int]:
        with Image.open(io.BytesIO(self._bytes(key))) as image:
            return image.size


def load_hf_dataset(path: Path, limit: int | None = None) -> RawRows:
    import datasets

    source = str(path)
    ds = _load(path)
    image_cols = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
    if not image_cols:
        raise DdpEvalError(f"{source}: no column of type Image; columns are {', '.join(ds.column_names)}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    table = ds.remove_columns(image_cols).to_pandas()
    images = DatasetImages(ds, image_cols[0], source)
    keys = [(k,) for k in shared_image_keys(images, len(table))]
    return RawRows(name=path.stem, source=source, table=table, image_keys=keys, images=images)


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
