"""Content digests of the files a run's predictions depend on (benchmark file, image files, weights).

A changed image or weight file must not resume old shards, so the run identity carries a digest of
their contents. Hashing a few GB of weights takes seconds, so each file's sha256 is cached by path,
size and modification time (a JSON file in the cache dir): later runs only stat the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ddp_eval.store.atomic import atomic_write_text

log = logging.getLogger(__name__)

CACHE_NAME = "file_digests.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_digest(paths: Iterable[Path], cache_dir: Path | None) -> str:
    """One digest over the files' names (as given), sizes and contents; missing files count as missing."""
    cache_path = cache_dir / CACHE_NAME if cache_dir is not None else None
    cache = _read_cache(cache_path)
    changed = False
    whole = hashlib.sha256()
    for path in sorted(set(Path(p) for p in paths), key=str):
        try:
            st = path.stat()
        except OSError:
            whole.update(f"{path}\0missing\n".encode())
            continue
        if not path.is_file():
            whole.update(f"{path}\0not a file\n".encode())
            continue
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        known = cache.get(key)
        if not (isinstance(known, list) and known[:2] == stamp):
            known = [*stamp, _sha256(path)]
            cache[key] = known
            changed = True
        whole.update(f"{path.name}\0{st.st_size}\0{known[2]}\n".encode())
    if changed and cache_path is not None:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cache_path, json.dumps(cache))
        except OSError as err:  # a cache is a convenience: the digest is right without it
            log.warning("cannot write the file digest cache %s (%s)", cache_path, err)
    return whole.hexdigest()[:16]


def _read_cache(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_files(model_dir: Path) -> list[Path]:
    """Every file of a checkpoint directory (weights, config, tokenizer, chat template), top level."""
    try:
        return [p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return []


def data_files(source: Path, image_paths: Iterable[Path] = ()) -> list[Path]:
    """The benchmark file (or a dataset directory's files) and the image files its rows name."""
    files = [p for p in sorted(source.rglob("*")) if p.is_file()] if source.is_dir() else [source]
    return [*files, *image_paths]


def cache_dir_of(path: str) -> Path:
    return Path(os.path.expanduser(path))
