"""VLMEvalKit's benchmark TSVs, read the way VLMEvalKit reads them (pandas defaults), so prompts match.

Every file has an `index` and an `image` column and/or `image_path`; the other columns are the task's
to read. An image cell holds base64, or a printed Python list of base64 strings (several images, e.g.
MMMU), or a short text naming another row's index, whose images the row shows (MMBench's circular
copies). In a file without an image column, `image_path` names each row's file, or a printed list of
files; in a file with one, a row whose image cell is empty is left out, as VLMEvalKit's datasets leave it
out (`skip_noimg`), with a warning that counts them.

Each image gets its own key in the store: the owning row's index for a row of one image, (index,
position) for a row of several. The index is an integer where every index is one, else the index's
text (HallusionBench's indices are strings).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from pathlib import Path

import pandas as pd

from ddp_eval.data.cells import cell_list, check_index_column, integer_index, is_missing
from ddp_eval.data.images import Base64Images
from ddp_eval.data.rows import RawRows
from ddp_eval.errors import DdpEvalError

REFERENCE_LENGTH = 64  # an image cell this short names another row (VLMEvalKit's rule)

log = logging.getLogger(__name__)


def read_table(path: Path) -> pd.DataFrame:
    """A TSV / XLSX as pandas reads it by default (VLMEvalKit's `load`)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        raise DdpEvalError(f"{path}: a JSON file, not a table (a run's shard?); read a TSV, XLSX or CSV, e.g. the "
                           "run's predictions.tsv")
    try:
        if suffix == ".xlsx":
            return pd.read_excel(path)
        if suffix == ".csv":  # VLMEvalKit's load: comma-separated
            return pd.read_csv(path)
        return pd.read_csv(path, sep="\t")
    except FileNotFoundError:
        raise DdpEvalError(f"benchmark file not found: {path}") from None
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except pd.errors.EmptyDataError:
        raise DdpEvalError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise DdpEvalError(f"{path}: cannot parse as a table ({err})") from None


def not_utf8(path: Path) -> DdpEvalError:
    """The error for a file that is not UTF-8, naming the first bad byte's offset in the file and its line
    (pandas' own error counts from the start of the chunk it was decoding)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return DdpEvalError(f"{path}: not UTF-8 text ({err.reason}: byte 0x{data[err.start]:02x} at byte offset "
                            f"{err.start}, line {line}); re-save it as UTF-8")
    return DdpEvalError(f"{path}: not UTF-8 text; re-save it as UTF-8")


class TsvImages(Base64Images):
    """The TSV's images by key: a row index, or (row index, position) for a row of several images."""

    def describe(self, key: Hashable) -> str:
        if isinstance(key, tuple):
            return f"{self.source}, image {key[1] + 1} of row index {key[0]}"
        return super().describe(key)


def image_keys(owner: Hashable, count: int) -> tuple[Hashable, ...]:
    return (owner,) if count == 1 else tuple((owner, position) for position in range(count))


def load_tsv(path: Path, limit: int | None = None) -> RawRows:
    source = str(path)
    table = read_table(path)
    if "image" not in table.columns and "image_path" not in table.columns:
        raise DdpEvalError(f"{source}: needs an image or image_path column; found {', '.join(map(str, table.columns))}")
    if "index" not in table.columns:
        raise DdpEvalError(f"{source}: missing required column index; found {', '.join(map(str, table.columns))}")
    if "image" in table.columns and len(table):
        imageless = table["image"].map(is_missing)
        if imageless.all():
            raise DdpEvalError(f"{source}: every row's image cell is empty; VLMEvalKit leaves such rows out, so "
                               "nothing is left (drop the image column to use image_path)")
        if imageless.any():
            shown = ", ".join(map(str, table["index"][imageless].head(10)))
            log.warning("%s: %d row(s) without an image left out, as VLMEvalKit leaves them out (index %s%s)", source,
                        int(imageless.sum()), shown, ", ..." if imageless.sum() > 10 else "")
            table = table[~imageless].reset_index(drop=True)
    values = list(table["index"])
    check_index_column(values, source)  # before the image references, which an index problem would misname
    integer = all(integer_index(v) is not None for v in values)
    owners = [integer_index(v) if integer else str(v) for v in values]
    cells = [None if is_missing(v) else str(v) for v in table["image"]] if "image" in table else [None] * len(table)
    store = TsvImages({}, {}, source)
    named = list(table["image_path"]) if "image_path" in table.columns else [None] * len(table)
    own = {pos: _own_images(store, owners[pos], cell, named[pos], source) for pos, cell in enumerate(cells)
           if cell is not None and len(cell) > REFERENCE_LENGTH}
    by_text = {str(owner): pos for pos, owner in enumerate(owners)}
    keys = []
    for pos, cell in enumerate(cells):
        if pos in own:
            keys.append(own[pos])
        elif cell is not None:
            keys.append(own[_referenced_row(cell, owners[pos], by_text, own, integer, source)])
        else:
            keys.append(_path_images(store, owners[pos], table, pos, path))
    meta = table.drop(columns=["image"], errors="ignore")
    if limit is not None:
        meta, keys = meta.iloc[:limit].reset_index(drop=True), keys[:limit]
    return RawRows(name=path.stem, source=source, table=meta, image_keys=keys, images=store)


def _own_images(store: TsvImages, owner: Hashable, cell: str, image_path, source: str) -> tuple[Hashable, ...]:
    """The row's base64 images; VLMEvalKit dumps them to its image_path (one name per image) where it has one."""
    try:
        items = cell_list(cell)
    except ValueError as err:
        raise DdpEvalError(f"{source}: row index {owner}: the image cell {err}") from None
    keys = image_keys(owner, len(items))
    store.cells.update(zip(keys, items))
    if not is_missing(image_path):
        try:
            names = cell_list(str(image_path))
        except ValueError:
            names = []
        if len(names) == len(keys):
            store.names.update(zip(keys, names))
    return keys


def _referenced_row(cell: str, owner: Hashable, by_text: dict[str, int], own: dict, integer: bool,
                    source: str) -> int:
    """The row a short image cell names: by the index's text, as VLMEvalKit matches it (3 also as 3.0)."""
    target = by_text.get(cell.strip())
    if target is None and integer and integer_index(cell) is not None:
        target = by_text.get(str(integer_index(cell)))
    if target is None or target not in own:
        raise DdpEvalError(f"{source}: row index {owner} refers to the image of row {cell}, which has no image of "
                           "its own (an image cell of 64 characters or fewer names another row's index)")
    return target


def _path_images(store: TsvImages, owner: Hashable, table: pd.DataFrame, pos: int, path: Path) -> tuple:
    """A row without an image cell: the file(s) its image_path names, relative to the TSV; none named, one
    key that fails with its reason when the row's batch is prepared."""
    cell = table["image_path"].iloc[pos] if "image_path" in table.columns else None
    if is_missing(cell):
        return (owner,)
    try:
        names = cell_list(str(cell))
    except ValueError as err:
        raise DdpEvalError(f"{path}: row index {owner}: the image_path cell {err}") from None
    keys = image_keys(owner, len(names))
    for key, name in zip(keys, names):
        store.paths[key] = Path(name) if Path(name).is_absolute() else path.parent / name
    return keys
