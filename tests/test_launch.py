"""The SLURM scripts, run on localhost with fake `srun` / `scontrol`: 2 "nodes" x 1 process, gloo.
test_slurm_cluster.py runs them under a real one-node SLURM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from helpers import predictions, shard_records

FAKE_SRUN = """#!/usr/bin/env bash
# Fake srun: run the command once per "node" on this machine, with that node's SLURM_NODEID.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node "$@" &
    pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""

FAKE_SCONTROL = """#!/usr/bin/env bash
# Fake scontrol: 'show hostnames LIST' prints one host a line; anything else is logged.
if [[ "$1 $2" == "show hostnames" ]]; then tr ',' '\\n' <<< "$3"; else echo "$@" >> "$SCONTROL_LOG"; fi
"""


@pytest.fixture
def fake_slurm(tmp_path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable,
            "SLURM_JOB_ID": "4242", "LOG_DIR": str(tmp_path / "logs"), "SCONTROL_LOG": str(tmp_path / "scontrol.log"),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_scripts_pass_bash_n_and_shellcheck():
    scripts = sorted(str(p) for p in (REPO / "launch").iterdir() if p.suffix in (".sbatch", ".sh"))
    assert len(scripts) == 3
    for script in scripts:
        subprocess.run(["bash", "-n", script], check=True)
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    done = subprocess.run([shellcheck, *scripts], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_multi_node_script_on_two_fake_nodes_gives_the_complete_result(fake_slurm, config_file, tmp_path):
    out = tmp_path / "multi"
    env = {**fake_slurm, "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "localhost,localhost", "NPROC_PER_NODE": "1"}
    done = subprocess.run(["bash", str(REPO / "launch" / "slurm_multi_node.sbatch"), str(config_file),
                           "--set", f"run.output_dir={out}", "--quiet"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rendezvous at localhost:" in done.stderr
    records = shard_records(out)
    assert len(records) == 78 and {r["rank"] for r in records} == {0, 1}
    assert len(predictions(out)) == 78
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    logs = list((tmp_path / "logs" / "4242").rglob("stdout.log"))
    assert len(logs) == 2  # one per rank, under node0/ and node1/


def _stop_single_node_script(env, out, signum):
    cmd = ["bash", str(REPO / "launch" / "slurm_single_node.sbatch"), str(env["CONFIG"]), "--set",
           f"run.output_dir={out}", "--set", "run.batch_size=1", "--set", "generation.max_new_tokens=80", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(shard_records(out) if (out / "shards").exists() else []) < 4:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    return cmd, proc.returncode, stderr


@pytest.mark.skipif(os.environ.get("DDP_EVAL_REQUIRE_SLURM") == "1",
                    reason="real SLURM is installed: test_slurm_cluster.py requeues on USR1 and resumes on it")
def test_single_node_script_requeues_on_usr1_and_the_requeued_job_resumes(fake_slurm, config_file, tmp_path):
    out = tmp_path / "single"
    env = {**fake_slurm, "NPROC_PER_NODE": "2", "CONFIG": str(config_file)}
    cmd, returncode, stderr = _stop_single_node_script(env, out, signal.SIGUSR1)  # SLURM's time-limit warning
    assert returncode == 138, stderr[-3000:]
    assert "SIGUSR1" in stderr and "second SIGTERM" not in stderr
    assert "requeue 4242" in Path(env["SCONTROL_LOG"]).read_text()
    before = len(shard_records(out))
    assert 0 < before < 78
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)  # the requeued job
    assert done.returncode == 0, done.stderr[-3000:]
    indices = [r["index"] for r in shard_records(out)]
    assert len(indices) == len(set(indices)) == 78


@pytest.mark.skipif(os.environ.get("DDP_EVAL_REQUIRE_SLURM") == "1",
                    reason="real SLURM is installed: test_slurm_cluster.py's plain scancel stops without requeue")
def test_single_node_script_stops_on_sigterm_without_requeueing(fake_slurm, config_file, tmp_path):
    env = {**fake_slurm, "NPROC_PER_NODE": "2", "CONFIG": str(config_file)}
    _, returncode, stderr = _stop_single_node_script(env, tmp_path / "single", signal.SIGTERM)  # scancel
    assert returncode == 143, stderr[-3000:]
    assert "no requeue" in stderr and "second SIGTERM" not in stderr
    assert "requeue" not in Path(env["SCONTROL_LOG"]).read_text()
    assert 0 < len(shard_records(tmp_path / "single")) < 78, stderr[-6000:]


@pytest.mark.slow  # ~50 s: four launches; test_torchrun.py covers world-size equality and kill + resume
def test_scaling_script_on_cpu_ranks(config_file, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "scaling.py"), "--config", str(config_file),
                           "--ranks", "1,2", "--out", str(tmp_path), "--set", "run.batch_size=2",
                           "--set", "generation.max_new_tokens=30", "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "s.json").read_text())
    assert [w["identical_predictions"] for w in result["worlds"]] == [True, True]
    assert result["kill"]["killed"] and result["kill"]["exactly_once"]
    assert 0 < result["kill"]["recomputed"] < 78
