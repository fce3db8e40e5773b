"""Image stores: decode on demand, so only the rows of a batch are ever decoded.

VLMEvalKit's TSVs hold base64 images; a cell that is a bare index (64 characters or fewer) refers to
another row's image. Rows without an image cell may name a file in `image_path`.

What is read is bounded: an image file is opened only when it is a regular file (a FIFO or a device
like /dev/zero would block or never end, even for `--dry-run`, which reads image headers) and read
only up to MAX_IMAGE_BYTES; a base64 cell is decoded only when its image fits in that bound too.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import stat
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ddp_eval.errors import DdpEvalError

MAX_IMAGE_BYTES = 512 * 2**20  # far above any benchmark image; a bound, so a bad path cannot fill memory
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a plain file")


def _too_large(what: str, size: str = "") -> DdpEvalError:
    return DdpEvalError(f"{what}: the image is {size + ', ' if size else ''}larger than the "
                        f"{MAX_IMAGE_BYTES // 2**20} MiB (MAX_IMAGE_BYTES) an image may have; shrink or re-encode it")


def read_image_file(path: Path, what: str) -> bytes:
    """The file's bytes, if it is a regular file of at most MAX_IMAGE_BYTES (checked before it is opened)."""
    try:
        st = os.stat(path)
        _check_regular(st, path, what)
        if st.st_size > MAX_IMAGE_BYTES:
            raise _too_large(f"{what} ({path})", f"{st.st_size / 2**20:.0f} MiB")
        # O_NONBLOCK: should the path turn into a FIFO after the stat, opening it does not block either
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            _check_regular(os.fstat(f.fileno()), path, what)
            data = f.read(MAX_IMAGE_BYTES + 1)  # the size may lie (it grew, or a /proc-like file says 0)
    except OSError as err:
        raise DdpEvalError(f"{what}: cannot read image file {path} ({err.strerror or err})") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_large(f"{what} ({path})")
    return data


def _check_regular(st: os.stat_result, path: Path, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise DdpEvalError(f"{what}: image file {path} is not a regular file ({_kind(st.st_mode)}); "
                           "point image_path at an image file")


def decode_base64(cell: str, what: str) -> bytes:
    """A base64 cell's bytes, refused before decoding when they would exceed MAX_IMAGE_BYTES."""
    if len(cell) // 4 * 3 > MAX_IMAGE_BYTES:  # 3 bytes per 4 characters: an upper bound, known before decoding
        raise _too_large(what, f"about {len(cell) // 4 * 3 / 2**20:.0f} MiB in base64")
    try:
        return base64.b64decode(cell, validate=False)
    except (binascii.Error, ValueError) as err:
        raise DdpEvalError(f"{what}: not valid base64 ({err})") from None


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


# How base64 images reach the model, in the run identity: shards predicted from images decoded another
# way (before as_dumped: RGBA composed onto white, .jpg image_paths not re-encoded) are another run's.
IMAGE_PIPELINE = "as_vlmevalkit_dumps"

# VLMEvalKit's decode_base64_to_image converts these modes to RGB: the alpha channel is dropped, not
# composed onto white as qwen_vl_utils' to_rgb would do with the image as decoded.
TO_RGB_MODES = ("RGBA", "P", "LA", "CMYK")


def as_dumped(image: Image.Image, file_name: str, what: str) -> Image.Image:
    """A base64 image as VLMEvalKit's `dump_image` leaves it on disk, which is what its models read: the
    modes above converted to RGB, then saved in the format of `file_name` (`<index>.png`, or the row's
    image_path: MME's end in .jpg, so JPEG at PIL's default quality) and read back. RGB and L images saved
    as PNG come back pixel for pixel, so only other formats and modes go through an encoder here."""
    if image.mode in TO_RGB_MODES:
        image = image.convert("RGB")
    fmt = Image.registered_extensions().get(Path(file_name).suffix.lower(), "PNG")
    if fmt == "PNG" and image.mode in ("RGB", "L"):
        return image
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
        buffer.seek(0)
        stored = Image.open(buffer)
        stored.load()
    except (OSError, ValueError, KeyError) as err:
        raise DdpEvalError(f"{what}: cannot store the {image.mode} image as {file_name} the way VLMEvalKit does "
                           f"before its model reads it ({type(err).__name__}: {err})") from None
    return stored


def header_size(data: bytes, what: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception as err:
        raise DdpEvalError(f"{what}: cannot read the image header ({type(err).__name__}: {err})") from None


class Base64Images:
    """Images keyed by the owning row's index: `cells` holds the base64 text, `paths` the files of rows
    without one; `names` the file name VLMEvalKit would dump a base64 image to, where it is not
    `<index>.png` (the row's image_path)."""

    def __init__(self, cells: dict[int, str], paths: dict[int, Path], source: str,
                 names: dict | None = None) -> None:
        self.cells = cells
        self.paths = paths
        self.source = source
        self.names = names if names is not None else {}

    def describe(self, key: int) -> str:
        return f"{self.source}, image of row index {key}"

    def _bytes(self, key: int) -> bytes:
        if key in self.cells:
            return decode_base64(self.cells[key], self.describe(key))
        path = self.paths.get(key)
        if path is None:
            raise DdpEvalError(f"{self.describe(key)}: the row has neither an image nor an image_path")
        return read_image_file(path, self.describe(key))

    def open(self, key: int) -> Image.Image:
        if key not in self.cells:  # a file image_path names: VLMEvalKit's models read it as it is
            return decode_image(self._bytes(key), f"{self.describe(key)}, {self.paths.get(key)}")
        image = decode_image(self._bytes(key), self.describe(key))
        return as_dumped(image, self.names.get(key, ".png"), self.describe(key))

    def size(self, key: int) -> tuple[int, int]:
        return header_size(self._bytes(key), self.describe(key))


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
