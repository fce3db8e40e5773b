"""Real torchrun with the gloo backend on CPU: exactly-once, world-size independence, kill + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SMALL_PIXELS
from helpers import env, predictions, rank_pid, shard_records


def torchrun_cmd(nproc: int, config: Path, *overrides: str) -> list[str]:
    sets = [x for o in overrides for x in ("--set", o)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "ddp_eval", "--config", str(config), "--quiet", *sets]


@pytest.fixture(scope="module")
def single_process_predictions(tiny_model, demo_tsv, tmp_path_factory) -> dict[int, str]:
    out = tmp_path_factory.mktemp("single")
    cmd = [sys.executable, "-m", "ddp_eval", "--quiet", "--set", f"model.path={tiny_model}",
           "--set", f"data.path={demo_tsv}", "--set", "model.dtype=float32", "--set", "run.batch_size=4",
           "--set", "run.num_workers=0", "--set", "generation.max_new_tokens=6", "--set", f"run.output_dir={out}",
           *[x for o in SMALL_PIXELS for x in ("--set", o)]]
    subprocess.run(cmd, check=True, env=env(), capture_output=True)
    return predictions(out)


# Slow: 2 ranks equal to one process is also what test_suite.py's torchrun tests assert (every task family).
@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 3])  # 3: uneven shares
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


def signal_rank_mid_run(cmd: list[str], out: Path, rank: int, sig: int, world: int = 2):
    """Start torchrun, send `sig` to `rank` once its shard holds two records; return the finished process."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shard = out / "shards" / f"rank{rank:03d}-of-{world:03d}.jsonl"
    deadline, sent = time.time() + 120, False
    while time.time() < deadline and proc.poll() is None and not sent:
        if shard.exists() and len(shard.read_text().splitlines()) >= 3:  # header + 2 records
            pid = rank_pid(proc.pid, rank)
            if pid is not None:
                os.kill(pid, sig)
                sent = True
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=180)
    assert sent, "the rank finished before the signal could be sent"
    return proc.returncode, stdout, stderr


SLOW = ["run.batch_size=2", "generation.max_new_tokens=40"]


# Slow: test_resume_with_another_world_size_predicts_only_the_missing_rows kills a rank the same way and
# asserts the same of the rerun (every row once, only the missing ones predicted), at another world size.
@pytest.mark.slow
def test_rank_killed_mid_run_then_rerun_gives_every_row_once(config_file, tmp_path, single_process_predictions):
    out = tmp_path / "killed"
    cmd = torchrun_cmd(2, config_file, f"run.output_dir={out}", *SLOW)
    code, _, _ = signal_rank_mid_run(cmd, out, 1, signal.SIGKILL)
    assert code != 0
    before = {r["index"] for r in shard_records(out)}
    assert 0 < len(before) < len(single_process_predictions)

    done = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    records = shard_records(out)
    assert sorted(r["index"] for r in records) == sorted(single_process_predictions)  # every row exactly once
    assert len(records) - len(before) == len(single_process_predictions) - len(before)  # only the missing
    assert set(predictions(out)) == set(single_process_predictions)


def test_sigterm_writes_the_batch_in_flight_whole_and_exits_nonzero(config_file, tmp_path):
    out = tmp_path / "term"
    # The parity rows' thread runs beside the batches when the signal comes: it must not hold the rank.
    cmd = torchrun_cmd(2, config_file, f"run.output_dir={out}", *SLOW, "run.parity_rows=8", "run.parity_alongside=true")
    code, _, stderr = signal_rank_mid_run(cmd, out, 1, signal.SIGTERM)
    assert code != 0
    assert "stopped by SIGTERM" in stderr
    records = shard_records(out)  # every line parses: no half-written batch
    per_batch = {}
    for r in records:
        per_batch.setdefault(r["batch"], []).append(r["index"])
    assert all(len(v) == 2 for b, v in per_batch.items() if b != max(per_batch))  # whole batches only
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(shard_records(out)) == 78


def test_torchrun_max_restarts_resumes_from_the_shards(config_file, tmp_path):
    out = tmp_path / "restarts"
    cmd = torchrun_cmd(2, config_file, f"run.output_dir={out}", *SLOW)
    cmd.insert(cmd.index("--standalone"), "--max-restarts=1")
    code, stdout, stderr = signal_rank_mid_run(cmd, out, 1, signal.SIGKILL)
    assert code == 0, stderr[-3000:]
    indices = [r["index"] for r in shard_records(out)]
    assert len(indices) == len(set(indices)) == 78
    assert "Overall" in stdout


def test_world_size_larger_than_the_row_count(config_file, tmp_path):
    out = tmp_path / "tiny"
    done = subprocess.run(torchrun_cmd(3, config_file, f"run.output_dir={out}", "data.limit=2"), env=env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(predictions(out)) == [0, 1000000]


def test_resume_with_another_world_size_predicts_only_the_missing_rows(config_file, tmp_path,
                                                                        single_process_predictions):
    out = tmp_path / "reshard"
    code, _, _ = signal_rank_mid_run(torchrun_cmd(3, config_file, f"run.output_dir={out}", *SLOW), out, 1,
                                     signal.SIGKILL, world=3)
    assert code != 0
    before = {r["index"] for r in shard_records(out)}
    done = subprocess.run(torchrun_cmd(2, config_file, f"run.output_dir={out}", *SLOW), env=env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    records = shard_records(out)
    assert sorted(r["index"] for r in records) == sorted(single_process_predictions)
    assert len(records) - len(before) == len(single_process_predictions) - len(before)
    assert {p.name for p in (out / "shards").glob("*.jsonl")} >= {"rank000-of-003.jsonl", "rank000-of-002.jsonl"}


def test_sigint_on_a_single_process_run_stops_after_the_batch_with_status_130(config_file, tmp_path):
    out = tmp_path / "int"
    cmd = [sys.executable, "-m", "ddp_eval", "--config", str(config_file), "--quiet", "--set",
           f"run.output_dir={out}", *[x for s in SLOW for x in ("--set", s)]]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shard = out / "shards" / "rank000-of-001.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (shard.exists() and len(shard.read_text().splitlines()) >= 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "stopped by SIGINT" in stderr and "re-run the same command to resume" in stderr
    assert len(shard_records(out)) % 2 == 0  # whole batches of 2 only
