"""The SLURM scripts under a real one-node SLURM on localhost (tests/slurm_cluster.py): a run from a fresh
checkout, the time-limit signal (USR1) -> stop -> requeue -> resume, a plain scancel, the multi-node script.

Needs root and Debian's `slurm-wlm` + `munge` (.ci/run installs them); skipped with the reason otherwise,
and failed instead when DDP_EVAL_REQUIRE_SLURM=1 (.ci/run sets it once the install worked). Each job runs
the `config_file` fixture's tiny model on 2 CPU ranks with gloo; the stop tests slow it down (batches of 1,
80 new tokens) so that there is a batch in flight to finish.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from helpers import predictions, shard_records
from slurm_cluster import LocalSlurm, SlurmUnavailable

SLOW = ["--set", "run.batch_size=1", "--set", "generation.max_new_tokens=80"]


def _unavailable(reason: str) -> None:
    if os.environ.get("DDP_EVAL_REQUIRE_SLURM") == "1":
        pytest.fail(f"DDP_EVAL_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = LocalSlurm.why_not()
    if reason:
        _unavailable(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as err:
        _unavailable(f"the local SLURM cluster did not start: {err}")
    yield cluster
    cluster.stop()
    assert not cluster.leftover_processes(), "processes of the test cluster were left running"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A fresh checkout's state: the launch scripts, no logs/ folder. Jobs are submitted from here."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "launch", root / "launch")
    return root


def submit(slurm: LocalSlurm, checkout: Path, script: str, sbatch_args: list[str], config: Path, out: Path,
           *args: str) -> str:
    env = {**slurm.env(), "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    cmd = ["sbatch", "--parsable", *sbatch_args, f"launch/{script}", str(config), "--set", f"run.output_dir={out}",
           "--quiet", *args]
    done = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def wait_for_records(out: Path, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not ((out / "shards").exists() and len(shard_records(out)) >= count):
        assert time.monotonic() < deadline, f"fewer than {count} rows predicted within {timeout_s:.0f} s"
        time.sleep(0.1)


def rank_logs(checkout: Path, job: str) -> dict[Path, str]:
    return {p: p.read_text() for p in sorted((checkout / "logs" / job).rglob("stderr.log"))}


def assert_each_rank_stopped_once_with_its_batch_written(logs: dict[Path, str], out: Path) -> None:
    """The batch in flight is not lost: no rank saw a second signal, and each one that stopped wrote every
    row it says it wrote (the rows are in its shard)."""
    written = {}
    for path, text in logs.items():
        assert "second SIG" not in text, f"{path}: a rank was signalled twice\n{text[-2000:]}"
        for rank, rows in re.findall(r"stopped by SIGTERM: rank (\d+) wrote (\d+) of", text):
            written[int(rank)] = int(rows)
    assert written, "no rank says it stopped"
    per_rank = {}
    for record in shard_records(out):
        per_rank[record["rank"]] = per_rank.get(record["rank"], 0) + 1
    for rank, rows in written.items():
        assert per_rank.get(rank, 0) == rows, f"rank {rank} says it wrote {rows} rows, its shard has {per_rank}"


# Slow: the USR1 test below runs the same script from a fresh checkout to COMPLETED (after a requeue) and
# checks the same lines and logs.
@pytest.mark.slow
def test_single_node_script_runs_the_demo_config_from_a_fresh_checkout(slurm, checkout, config_file, tmp_path):
    out = tmp_path / "out"
    job = submit(slurm, checkout, "slurm_single_node.sbatch", ["--ntasks-per-node=2"], config_file, out)
    info = slurm.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout_s=180)
    log = checkout / f"ddp_eval-{job}.out"
    assert info["JobState"] == "COMPLETED", log.read_text()[-3000:] if log.exists() else slurm.log_tail()
    assert "2 ranks (no GPU granted: one per task, --ntasks-per-node)" in log.read_text()
    assert len(predictions(out)) == 78
    logs = rank_logs(checkout, job)
    assert {p.parent.name for p in logs} == {"0", "1"}  # logs/<job>/<run id>/attempt_0/<local rank>/


def test_usr1_stops_after_the_batch_in_flight_requeues_and_the_job_resumes(slurm, checkout, config_file, tmp_path):
    out = tmp_path / "out"
    job = submit(slurm, checkout, "slurm_single_node.sbatch", ["--ntasks-per-node=2"], config_file, out, *SLOW)
    wait_for_records(out, 4)
    slurm.run("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@120 sends before the limit
    slurm.wait_for(job, {"PENDING", "REQUEUED", "REQUEUE_HOLD"}, timeout_s=60)
    assert slurm.job(job)["Restarts"] == "1"
    first = shard_records(out)
    assert 0 < len(first) < 78
    assert_each_rank_stopped_once_with_its_batch_written(rank_logs(checkout, job), out)

    info = slurm.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout_s=180)
    text = (checkout / f"ddp_eval-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", text[-3000:]
    assert "SIGUSR1" in text and "requeueing" in text  # the first attempt's lines: appended, not overwritten
    assert f"ddp_eval[{job}, requeue 1]" in text
    assert "2 ranks (no GPU granted: one per task, --ntasks-per-node)" in text
    indices = [r["index"] for r in shard_records(out)]
    assert len(indices) == len(set(indices)) == 78
    assert {r["index"] for r in first} <= set(indices) and len(predictions(out)) == 78
    assert {p.parent.name for p in rank_logs(checkout, job)} == {"0", "1"}  # logs/<job>/<run id>/attempt_N/<rank>/


def test_plain_scancel_cancels_the_job_without_requeue(slurm, checkout, config_file, tmp_path):
    out = tmp_path / "out"
    job = submit(slurm, checkout, "slurm_single_node.sbatch", ["--ntasks-per-node=2"], config_file, out, *SLOW)
    wait_for_records(out, 4)
    slurm.run("scancel", job)
    info = slurm.wait_for(job, {"CANCELLED", "PENDING", "REQUEUED", "COMPLETED", "FAILED"}, timeout_s=60)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", info
    time.sleep(2)
    assert slurm.job(job)["JobState"] == "CANCELLED"
    text = (checkout / f"ddp_eval-{job}.out").read_text()
    assert "SIGTERM" in text and "no requeue" in text, text[-3000:]
    assert_each_rank_stopped_once_with_its_batch_written(rank_logs(checkout, job), out)
    assert 0 < len(shard_records(out)) < 78


def test_multi_node_script_on_one_node_with_two_ranks(slurm, checkout, config_file, tmp_path):
    out = tmp_path / "out"
    job = submit(slurm, checkout, "slurm_multi_node.sbatch", ["--nodes=1", "--ntasks-per-node=2"], config_file, out)
    info = slurm.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout_s=180)
    text = (checkout / f"ddp_eval-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", text[-3000:]
    assert "1 nodes x 2 ranks" in text and f"rendezvous at {slurm.node}:" in text
    assert len(predictions(out)) == 78
    logs = rank_logs(checkout, job)
    assert {p.parent.name for p in logs} == {"0", "1"} and all("node0" in p.parts for p in logs)


def test_multi_node_script_stops_its_step_on_usr1_and_requeues(slurm, checkout, config_file, tmp_path):
    out = tmp_path / "out"
    job = submit(slurm, checkout, "slurm_multi_node.sbatch", ["--nodes=1", "--ntasks-per-node=2"], config_file,
                 out, *SLOW)
    wait_for_records(out, 4)
    slurm.run("scancel", "--signal=USR1", "--batch", job)
    slurm.wait_for(job, {"PENDING", "REQUEUED", "REQUEUE_HOLD"}, timeout_s=60)
    assert slurm.job(job)["Restarts"] == "1"
    assert_each_rank_stopped_once_with_its_batch_written(rank_logs(checkout, job), out)
    slurm.run("scancel", job)  # the resume itself is the single-node test's
