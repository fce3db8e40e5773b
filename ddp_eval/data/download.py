"""Download a benchmark file once into a cache, md5-checked; a failed or wrong download leaves nothing.

Rank 0 downloads (with a progress bar) while the other ranks wait for its word (`run.runner.prepare_data`).
Which names exist, and their URLs and md5s, is the task registry's business (`tasks.registry`).
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ddp_eval.errors import DdpEvalError

log = logging.getLogger(__name__)


def download_url(url: str, mirror: str | None = None) -> str:
    """`url`, or the same file name under `mirror` (another download host)."""
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if mirror else url


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_path(name: str, cache_dir: str) -> Path:
    return Path(cache_dir).expanduser() / f"{name}.tsv"


def ensure_downloaded(name: str, url: str, expected: str, cache_dir: str, show_progress: bool = True) -> Path:
    """Path of the verified TSV for `name`, downloading it from `url` if the cache lacks a good copy."""
    target = cached_path(name, cache_dir)
    stale = None
    if target.exists():
        stale = file_md5(target)
        if stale == expected:
            return target
        log.warning("%s: md5 %s, expected %s (another version, or a damaged copy): downloading it again", target,
                    stale, expected)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tsv.part")
    log.info("downloading %s from %s", name, url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not show_progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        placed = (f"the TSV at {target} has md5 {stale}, not {name}'s {expected}: replace it with the right file, "
                  "or set data.md5 to accept it" if stale else f"place the TSV at {target}")
        raise DdpEvalError(
            f"cannot download {name} from {url} ({err}); {placed}, or set data.path to a local file"
        ) from None
    got = file_md5(partial)
    if got != expected:
        partial.unlink(missing_ok=True)
        raise DdpEvalError(f"downloaded {name} from {url} has md5 {got}, expected {expected}; nothing was kept")
    partial.replace(target)
    return target
