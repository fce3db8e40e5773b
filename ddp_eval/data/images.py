"""Image stores: decode on demand, so only the rows of a batch are ever decoded.

VLMEvalKit's TSVs hold base64 images; a cell that is a bare index (64 characters or fewer) refers to
another row's image. Rows without an image cell may name a file in `image_path`.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ddp_eval.errors import DdpEvalError


def decode_image(data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise DdpEvalError(f"{what}: cannot decode the image (not a recognised image format, {len(data)} bytes)") \
            from None
    except Exception as err:  # PIL raises many types for truncated or corrupt data
        raise DdpEvalError(f"{what}: cannot decode the image ({type(err).__name__}: {err})") from None
    if image.width == 0 or image.height == 0:
        raise DdpEvalError(f"{what}: the image has 0 pixels")
    return image


def _header_size(data: bytes, what: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception as err:
        raise DdpEvalError(f"{what}: cannot read the image header ({type(err).__name__}: {err})") from None


class Base64Images:
    """Images keyed by the owning row's index; `cells` holds the base64 text or a file path."""

    def __init__(self, cells: dict[int, str], paths: dict[int, Path], source: str) -> None:
        self.cells = cells
        self.paths = paths
        self.source = source

    def describe(self, key: int) -> str:
        return f"{self.source}, image of row index {key}"

    def _bytes(self, key: int) -> bytes:
        if key in self.cells:
            try:
                return base64.b64decode(self.cells[key], validate=False)
            except (binascii.Error, ValueError) as err:
                raise DdpEvalError(f"{self.describe(key)}: not valid base64 ({err})") from None
        path = self.paths.get(key)
        if path is None:
            raise DdpEvalError(f"{self.describe(key)}: the row has neither an image nor an image_path")
        try:
            return path.read_bytes()
        except OSError as err:
            raise DdpEvalError(f"{self.describe(key)}: cannot read image file {path} ({err.strerror})") from None

    def open(self, key: int) -> Image.Image:
        return decode_image(self._bytes(key), self.describe(key))

    def size(self, key: int) -> tuple[int, int]:
        return _header_size(self._bytes(key), self.describe(key))


def resolve_image_refs(indices: list[int], cells: list[str | None], source: str) -> list[int]:
    """For each row, the index of the row whose image it shows (itself, or the row a bare index names)."""
    by_index = dict(zip(indices, cells))
    keys = []
    for index, cell in zip(indices, cells):
        if cell is None or len(cell) > 64:
            keys.append(index)
            continue
        try:
            target = int(float(cell))
        except ValueError:
            raise DdpEvalError(
                f"{source}: row index {index} has a short image cell {cell!r} that is no row index"
            ) from None
        target_cell = by_index.get(target)
        if target_cell is None or len(target_cell) <= 64:
            raise DdpEvalError(
                f"{source}: row index {index} refers to the image of row {target}, which has no image of its own"
            )
        keys.append(target)
    return keys
