"""Real torchrun with the gloo backend on CPU: exactly-once, world-size independence, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMALL_PIXELS


def torchrun_cmd(nproc: int, config: Path, *overrides: str) -> list[str]:
    sets = [x for o in overrides for x in ("--set", o)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "ddp_eval", "--config", str(config), "--quiet", *sets]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


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


def predictions(out: Path) -> dict[int, str]:
    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    return dict(zip(table["index"], table["prediction"]))


def shard_records(out: Path) -> list[dict]:
    lines = [json.loads(line) for p in sorted((out / "shards").glob("*.jsonl"))
             for line in p.read_text().splitlines() if line.strip()]
    return [r for r in lines if "index" in r]  # skip the header lines


@pytest.fixture(scope="module")
def single_process_predictions(tiny_model, demo_tsv, tmp_path_factory) -> dict[int, str]:
    out = tmp_path_factory.mktemp("single")
    cmd = [sys.executable, "-m", "ddp_eval", "--quiet", "--set", f"model.path={tiny_model}",
           "--set", f"data.path={demo_tsv}", "--set", "model.dtype=float32", "--set", "run.batch_size=4",
           "--set", "run.num_workers=0", "--set", "generation.max_new_tokens=6", "--set", f"run.output_dir={out}",
           *[x for o in SMALL_PIXELS for x in ("--set", o)]]
    subprocess.run(cmd, check=True, env=env(), capture_output=True)
    return predictions(out)


@pytest.mark.parametrize("nproc", [2, 3])
def test_merged_predictions_equal_single_process(nproc, config_file, tmp_path, single_process_predictions):
    out = tmp_path / f"w{nproc}"
    done = subprocess.run(torchrun_cmd(nproc, config_file, f"run.output_dir={out}"), env=env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert predictions(out) == single_process_predictions
    records = shard_records(out)
    assert len(records) == len(single_process_predictions)
    assert {r["rank"] for r in records} == set(range(nproc))
    assert "Overall" in done.stdout


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's child whose environment has RANK=rank."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


def test_rank_killed_mid_run_then_rerun_gives_every_row_once(config_file, tmp_path, single_process_predictions):
    out = tmp_path / "killed"
    slow = [f"run.output_dir={out}", "run.batch_size=2", "generation.max_new_tokens=40"]
    proc = subprocess.Popen(torchrun_cmd(2, config_file, *slow), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    shard = out / "shards" / "rank001-of-002.jsonl"
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if shard.exists() and len(shard.read_text().splitlines()) >= 2:
            pid = _rank_pid(proc.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.02)
    proc.communicate(timeout=120)
    assert killed, "rank 1 finished before it could be killed"
    assert proc.returncode != 0
    before = {r["index"] for r in shard_records(out)}
    assert 0 < len(before) < len(single_process_predictions)

    done = subprocess.run(torchrun_cmd(2, config_file, *slow), env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    records = shard_records(out)
    indices = [r["index"] for r in records]
    assert sorted(indices) == sorted(single_process_predictions)  # every row exactly once
    assert len(records) - len(before) == len(single_process_predictions) - len(before)  # only the missing
    assert set(predictions(out)) == set(single_process_predictions)
