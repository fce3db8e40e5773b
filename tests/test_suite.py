"""A suite (data.benchmarks) in one launch: each benchmark's predictions equal a run on it alone, at any
world size; a benchmark that cannot be loaded is marked failed and the others finish."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from helpers import env, predictions

from ddp_eval.run.runner import Options, run

QUIET = Options(show_progress=False)


def two_benchmarks(demo_tsv, tmp_path):
    table = pd.read_csv(demo_tsv, sep="\t")
    first, second = tmp_path / "first.tsv", tmp_path / "second.tsv"
    table.head(30).to_csv(first, sep="\t", index=False)
    table.iloc[30:].to_csv(second, sep="\t", index=False)
    return first, second


def test_suite_predictions_equal_each_benchmark_alone_and_a_bad_one_is_marked_failed(
        make_config, single_process, demo_tsv, tmp_path):
    first, second = two_benchmarks(demo_tsv, tmp_path)
    alone = {}
    for path in (first, second):
        run(make_config(f"run.output_dir={tmp_path / ('alone_' + path.stem)}", data=path), single_process, QUIET)
        alone[path.stem] = predictions(tmp_path / f"alone_{path.stem}")
    suite = tmp_path / "suite"
    cfg = make_config("data.path=", f"data.benchmarks=[{first}, {tmp_path / 'absent.tsv'}, {second}]",
                      f"run.output_dir={suite}")
    metrics = run(cfg, single_process, QUIET)
    assert metrics[str(tmp_path / "absent.tsv")] is None
    for path in (first, second):
        assert predictions(suite / path.stem) == alone[path.stem]
    summary = json.loads((suite / "summary.json").read_text())
    assert [r["status"].split(":")[0] for r in summary] == ["ok", "failed", "ok"]
    assert "benchmark not found" in summary[1]["status"]
    assert summary[0]["rows"] == 30 and summary[0]["metric"] == "Overall Acc"  # "first": not a CircularEval name


def test_a_suite_with_a_failed_benchmark_exits_with_status_2_after_the_others_finish(config_file, demo_tsv,
                                                                                       tmp_path):
    first, _ = two_benchmarks(demo_tsv, tmp_path)
    out = tmp_path / "suite"
    cmd = [sys.executable, "-m", "ddp_eval", "--config", str(config_file), "--quiet", "--set", "data.path=", "--set",
           f"data.benchmarks=[{first}, {tmp_path / 'absent.tsv'}]", "--set", "data.limit=4", "--set",
           f"run.output_dir={out}"]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"1 of 2 benchmarks failed ({tmp_path / 'absent.tsv'}" in done.stderr
    assert (out / "first" / "metrics.json").exists() and (out / "summary.json").exists()


@pytest.mark.slow  # ~20 s: test_every_task_family_under_torchrun... runs a larger suite the same way
def test_suite_under_torchrun_gives_every_row_once_and_the_single_process_predictions(
        config_file, make_config, single_process, demo_tsv, tmp_path):
    first, second = two_benchmarks(demo_tsv, tmp_path)
    single = tmp_path / "single"
    run(make_config("data.path=", f"data.benchmarks=[{first}, {second}]", "run.batch_size=4",
                    f"run.output_dir={single}"), single_process, QUIET)
    out = tmp_path / "w2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddp_eval",
           "--config", str(config_file), "--quiet", "--set", "data.path=", "--set",
           f"data.benchmarks=[{first}, {second}]", "--set", f"run.output_dir={out}"]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for path in (first, second):
        assert predictions(out / path.stem) == predictions(single / path.stem)
    assert "suite summary" in done.stdout


def test_every_task_family_under_torchrun_gives_every_row_once_and_the_single_process_predictions(
        config_file, make_config, single_process, demo_tsv, tmp_path):
    from helpers import shard_records
    from tiny_benchmarks import hallusion_rows, mmmu_rows, pope_rows, textvqa_rows, write

    files = [write(pd.read_csv(demo_tsv, sep="\t").head(12).to_dict("records"), tmp_path / "MMBench_DEV_EN.tsv"),
             write(pope_rows(), tmp_path / "POPE.tsv"), write(hallusion_rows(), tmp_path / "HallusionBench.tsv"),
             write(textvqa_rows(), tmp_path / "TextVQA_VAL.tsv"), write(mmmu_rows(), tmp_path / "MMMU_DEV_VAL.tsv")]
    names = f"data.benchmarks=[{', '.join(map(str, files))}]"
    single = tmp_path / "single"
    run(make_config("data.path=", names, "run.batch_size=4", f"run.output_dir={single}"), single_process, QUIET)
    out = tmp_path / "w2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddp_eval",
           "--config", str(config_file), "--quiet", "--set", "data.path=", "--set", names,
           "--set", f"run.output_dir={out}"]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["ok"] * len(files), summary
    assert "suite summary" in done.stdout
    for path in files:
        assert predictions(out / path.stem) == predictions(single / path.stem)
        records = shard_records(out / path.stem)
        assert len(records) == len({r["index"] for r in records}) == len(predictions(single / path.stem))
