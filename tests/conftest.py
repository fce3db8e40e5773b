"""Shared fixtures: the tiny offline checkpoints and the demo benchmark, built once per session."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import torch

from ddp_eval.config import load_config
from ddp_eval.demo import build_benchmark_rows, build_checkpoint, write_tsv
from ddp_eval.distributed.group import DistInfo

REPO = Path(__file__).resolve().parent.parent

# Small images keep the CPU tests fast; the resizing logic is the same as at full size.
SMALL_PIXELS = ["model.min_pixels=3136", "model.max_pixels=50176"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("qwen2_vl") / "model", family="qwen2_vl")


@pytest.fixture(scope="session")
def tiny_model_25(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("qwen2_5_vl") / "model", family="qwen2_5_vl")


@pytest.fixture(scope="session")
def demo_tsv(tmp_path_factory) -> Path:
    return write_tsv(build_benchmark_rows(), tmp_path_factory.mktemp("bench") / "mmbench_demo.tsv")


@pytest.fixture
def make_config(tiny_model, demo_tsv, tmp_path):
    def make(*overrides: str, model: Path | None = None, data: Path | None = None):
        base = [f"model.path={model or tiny_model}", f"data.path={data or demo_tsv}", "model.dtype=float32",
                f"run.output_dir={tmp_path / 'out'}", "generation.max_new_tokens=6", "run.num_workers=0",
                *SMALL_PIXELS]
        return load_config(None, [*base, *overrides])

    return make


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A loopback HTTP server over a temporary folder, for download tests: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Quiet(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def single_process() -> DistInfo:
    return DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), initialized=False)


@pytest.fixture
def config_file(tiny_model, demo_tsv, tmp_path) -> Path:
    path = tmp_path / "cfg.yaml"
    lines = [f"model.path={tiny_model}", f"data.path={demo_tsv}", "model.dtype=float32", "run.batch_size=4",
             "run.num_workers=0", "generation.max_new_tokens=6", *SMALL_PIXELS]
    sections: dict[str, list[str]] = {}
    for line in lines:
        key, value = line.split("=", 1)
        section, name = key.split(".")
        sections.setdefault(section, []).append(f"  {name}: {value}")
    path.write_text("".join(f"{s}:\n" + "\n".join(v) + "\n" for s, v in sections.items()))
    return path
