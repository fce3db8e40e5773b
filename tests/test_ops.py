"""Operations: doctor, --dry-run, the job-wide progress bar, report.md, charts and the manifest."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ddp_eval.config import load_config
from ddp_eval.distributed.progress import JobProgress
from ddp_eval.errors import DdpEvalError
from ddp_eval.run.runner import Options, run
from ddp_eval.store.shards import ShardWriter, shard_path


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ddp_eval", *map(str, args)], capture_output=True, text=True,
                          env=env)


def test_doctor_reports_versions_device_map_model_and_data(config_file):
    done = cli("doctor", "--config", config_file)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "torch" in out and "transformers" in out
    assert "Python bytecode:" in out
    assert "local rank 0 -> cpu" in out
    assert "qwen2_vl config and processor load" in out
    assert "attention implementations: eager, sdpa" in out
    assert "vision attention fa4 (FlashAttention-4): not usable here: no CUDA GPU" in out
    assert "vision attention triton (this package's kernel, auto's on Hopper): not usable here: no CUDA GPU" in out


@pytest.mark.parametrize("kernel", ["fa4", "triton"])
def test_doctor_fails_a_config_asking_for_a_gpu_kernel_where_it_cannot_run(config_file, kernel):
    done = cli("doctor", "--config", config_file, "--set", f"model.vision_attention={kernel}")
    assert done.returncode == 2
    assert f"[FAIL] model.vision_attention={kernel}: no CUDA GPU" in done.stdout


def test_doctor_fails_on_device_map_and_torchrun_env_is_mapped(config_file, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_file.read_text().replace("model:\n", "model:\n  device_map: auto\n"))
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "PATH": "/usr/bin:/bin",
           # as on the GPU machines of bench/RESULTS.md run 29: no bytecode written, none to read
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path / "empty")}
    done = cli("doctor", "--config", bad, env=env)
    assert done.returncode == 2
    assert "device_map is set" in done.stdout
    assert "rank 1 of 4, 2 process(es) on this node: local rank 0 -> cpu, local rank 1 -> cpu" in done.stdout
    assert "[warn] Python bytecode: not written (PYTHONDONTWRITEBYTECODE or -B) and torch has none" in done.stdout


def test_doctor_warns_only_where_no_bytecode_is_written_nor_installed():
    from ddp_eval.run.doctor import bytecode_line

    assert bytecode_line(False, False).startswith("[  ok] Python bytecode: written")
    assert bytecode_line(True, True).startswith("[  ok] Python bytecode: not written")
    assert bytecode_line(True, False).startswith("[warn] Python bytecode: not written")


ENTRY = """
import atexit, sys
atexit.register(lambda: print("interpreter teardown ran", flush=True))
if sys.argv[1] == "traced":
    sys.settrace(lambda *args: None)
sys.argv[1:] = sys.argv[2:]
from ddp_eval.cli import entry
entry()
"""


@pytest.mark.parametrize("watched", ["plain", "traced"])
def test_a_finished_command_leaves_without_teardown_unless_traced_and_errors_exit_as_usual(watched):
    done = subprocess.run([sys.executable, "-c", ENTRY, watched, "benchmarks"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = [line for line in done.stdout.splitlines() if line != "interpreter teardown ran"]
    assert listed[-1].startswith("rows: ") and len(listed) > 10  # flushed whole, up to its last line
    assert ("interpreter teardown ran" in done.stdout) == (watched == "traced")  # cProfile, coverage: their files
    failed = subprocess.run([sys.executable, "-c", ENTRY, watched, "score", "no-such-file.tsv"], capture_output=True,
                            text=True)
    assert failed.returncode == 2 and "predictions file not found: no-such-file.tsv" in failed.stderr
    assert "interpreter teardown ran" in failed.stdout


def test_device_map_key_gets_an_explanation(tmp_path):
    with pytest.raises(DdpEvalError, match="no device_map to set"):
        load_config(None, ["model.path=m", "data.path=d", "model.device_map=auto"])


def test_dry_run_prints_the_plan_and_loads_no_weights(config_file, tmp_path):
    done = cli("--config", config_file, "--dry-run", "--world-size", "3", "--set", f"run.output_dir={tmp_path / 'o'}")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "78 rows, 24 distinct images" in out
    assert out.count("to predict ->") == 3 and "rank002-of-003.jsonl" in out
    assert "resume: nothing predicted yet" in out and "no weights were loaded" in out
    assert not (tmp_path / "o").exists()


def test_dry_run_shows_what_a_resume_would_skip(make_config, single_process, config_file, tmp_path):
    run(make_config("run.batch_size=4"), single_process, Options(show_progress=False))
    done = cli("--config", config_file, "--dry-run", "--set", f"run.output_dir={tmp_path / 'out'}")
    assert "resume: 78 of 78 rows already in" in done.stdout, done.stderr
    assert "78 rows, 0 to predict" in done.stdout


def test_progress_counts_records_of_every_rank(tmp_path):
    with ShardWriter(shard_path(tmp_path, 0, 2), {"b": 1}) as w0:
        w0.write_batch([{"index": 0}])  # an earlier run's row: not counted
        with JobProgress(tmp_path, total=5, poll_s=0.01) as progress:
            w0.write_batch([{"index": 1}, {"index": 2}])
            with ShardWriter(shard_path(tmp_path, 1, 2), {"b": 1}) as w1:
                w1.write_batch([{"index": 3}, {"index": 4}, {"index": 5}])
        assert progress.bar.n == 5


def test_report_md_charts_and_manifest_after_a_run(make_config, single_process, tmp_path):
    pytest.importorskip("matplotlib")
    run(make_config("data.limit=20"), single_process, Options(show_progress=False))
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "CircularEval" in report and "![accuracy_by_category](accuracy_by_category.png)" in report
    assert (out / "accuracy_by_category.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 1 and manifest["timings"]["rows_predicted"] == 20
    assert manifest["versions"]["torch"] and manifest["identity"]["benchmark"] == "mmbench_demo"
    assert manifest["config"]["run"]["output_dir"] == str(out)
