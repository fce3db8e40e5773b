"""Final files are written to a temporary name beside them and renamed, so a crash never leaves half a
file; a full disk is one line naming the file and the free space, and leaves no temporary file."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ddp_eval.errors import DdpEvalError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space_error(path: Path, err: OSError) -> DdpEvalError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DdpEvalError(f"cannot write {path}: {err.strerror or err} ({free} on its file system); free some space "
                        "and re-run the same command: predictions already written are kept and resume")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """`with replacing(path) as tmp:` write `tmp`; it becomes `path` at the end, or vanishes on an error."""
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in _NO_SPACE:
            raise no_space_error(path, err) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
