"""Benchmark names -> the TSV URL and md5 that VLMEvalKit publishes; download once into a cache.

Rank 0 downloads (with a progress bar) while the other ranks wait for its word (`runner.prepare_data`).
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

HOST = "https://opencompass.openxlab.space/utils/benchmarks/MMBench"
# name -> md5 of the TSV, as VLMEvalKit's ImageMCQDataset publishes them.
BENCHMARK_MD5 = {
    "MMBench_DEV_EN": "b6caf1133a01c6bb705cf753bb527ed8",
    "MMBench_TEST_EN": "6939fadb0ce626fefc0bdc9c64efc528",
    "MMBench_DEV_CN": "08b8fc3324a5ed74155350f57be69fbd",
    "MMBench_TEST_CN": "7e1239baf0ee4c8b513e19705a0f317e",
    "MMBench_DEV_EN_V11": "30c05be8f2f347a50be25aa067248184",
    "MMBench_TEST_EN_V11": "8d1a704e791df6f5d9fb3ef782b65365",
    "MMBench_DEV_CN_V11": "593f9b5f6bea453d870a798b34ae4f37",
    "MMBench_TEST_CN_V11": "156e6569f9547afb16603eca16e85373",
}


def is_benchmark_name(text: str) -> bool:
    return text in BENCHMARK_MD5


def benchmark_url(name: str, mirror: str | None = None) -> str:
    return f"{(mirror or HOST).rstrip('/')}/{name}.tsv"


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_path(name: str, cache_dir: str) -> Path:
    return Path(cache_dir).expanduser() / f"{name}.tsv"


def ensure_downloaded(name: str, cache_dir: str, mirror: str | None = None, md5: str | None = None,
                      show_progress: bool = True) -> Path:
    """Path of the verified TSV for `name`, downloading it if the cache lacks a good copy."""
    expected = md5 or BENCHMARK_MD5[name]
    target = cached_path(name, cache_dir)
    if target.exists() and file_md5(target) == expected:
        return target
    url = benchmark_url(name, mirror)
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
        raise DdpEvalError(
            f"cannot download {name} from {url} ({err}); place the TSV at {target} or set data.path to a local file"
        ) from None
    got = file_md5(partial)
    if got != expected:
        partial.unlink(missing_ok=True)
        raise DdpEvalError(f"downloaded {name} from {url} has md5 {got}, expected {expected}; nothing was kept")
    partial.replace(target)
    return target
