"""VLMEvalKit's benchmark TSVs, read the way VLMEvalKit reads them (pandas defaults), so prompts match.

Every file has an `index` and an `image` column (base64, or a bare index naming another row's image)
and/or `image_path`; the other columns are the task's to read.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ddp_eval.data.cells import as_index, is_missing
from ddp_eval.data.images import Base64Images, resolve_image_refs
from ddp_eval.data.rows import RawRows
from ddp_eval.errors import DdpEvalError


def read_table(path: Path) -> pd.DataFrame:
    """A TSV / XLSX as pandas reads it by default (VLMEvalKit's `load`)."""
    try:
        if path.suffix.lower() == ".xlsx":
            return pd.read_excel(path)
        return pd.read_csv(path, sep="\t")
    except FileNotFoundError:
        raise DdpEvalError(f"benchmark file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise DdpEvalError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); re-save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DdpEvalError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise DdpEvalError(f"{path}: cannot parse as a table ({err})") from None


def load_tsv(path: Path, limit: int | None = None) -> RawRows:
    source = str(path)
    table = read_table(path)
    if "image" not in table.columns and "image_path" not in table.columns:
        raise DdpEvalError(f"{source}: needs an image or image_path column; found {', '.join(map(str, table.columns))}")
    if "index" not in table.columns:
        raise DdpEvalError(f"{source}: missing required column index")
    cells = [None if is_missing(v) else str(v) for v in table["image"]] if "image" in table else [None] * len(table)
    indices = [as_index(v, source, pos) for pos, v in enumerate(table["index"])]
    keys = resolve_image_refs(indices, cells, source)
    own_cells = {i: c for i, c in zip(indices, cells) if c is not None and len(c) > 64}
    paths = {}
    if "image_path" in table.columns:
        for i, p in zip(indices, table["image_path"]):
            if not is_missing(p):
                paths[i] = Path(p) if Path(p).is_absolute() else path.parent / str(p)
    meta = table.drop(columns=["image"], errors="ignore")
    if limit is not None:
        meta, keys = meta.iloc[:limit].reset_index(drop=True), keys[:limit]
    return RawRows(name=path.stem, source=source, table=meta, image_keys=[(k,) for k in keys],
                   images=Base64Images(own_cells, paths, source))
