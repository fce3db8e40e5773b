"""What ran: package versions, the git commit of ddp_eval, and the run's manifest file."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from ddp_eval.distributed.group import DistInfo
from ddp_eval.store.atomic import atomic_write_text


def _packages() -> list[str]:
    """ddp_eval and the packages it depends on (its own metadata), in the order it names them."""
    import re

    try:
        required = importlib.metadata.requires("ddp_eval") or []
    except importlib.metadata.PackageNotFoundError:
        required = []
    names = [re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0] for r in required if "extra ==" not in r]
    return [*names, "ddp_eval"]


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _packages():
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit() -> str | None:
    """The commit of the ddp_eval checkout in use (None when installed from a wheel)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def build_manifest(run_info: dict[str, Any], world_size: int, per_rank: list[dict[str, Any]],
                   cuda: dict[str, Any] | None = None) -> dict[str, Any]:
    """run.json's content + versions + timings; rows/s counts the slowest rank's time."""
    rows = sum(r["rows"] for r in per_rank)
    slowest = max((r["predict_s"] for r in per_rank), default=0.0)
    return {
        **run_info,
        "world_size": world_size,
        "versions": versions(),
        "git_commit": git_commit(),
        "cuda": cuda,
        "timings": {
            "rows_predicted": rows,
            "predict_s": slowest,
            "rows_per_s": rows / slowest if slowest else None,
            "ranks": per_rank,
        },
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def write_manifest(out: Path, info: DistInfo, per_rank: list[dict]) -> dict:
    """manifest.json: run.json + versions + git commit + per-rank timings and rows/s."""
    import torch

    run_info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    cuda = None
    if info.device.type == "cuda":
        cuda = {"device": torch.cuda.get_device_name(info.device), "cuda": torch.version.cuda,
                "nccl": ".".join(map(str, torch.cuda.nccl.version())) if info.initialized else None}
    manifest = build_manifest(run_info, info.world_size, per_rank, cuda)
    atomic_write_text(out / "manifest.json", dumps(manifest))
    return manifest
