"""Faults that used to lose, duplicate or hang: a second run on one output dir, a rank stalled at
start-up, an error while DataLoader workers run, unbounded inputs, and first-run friction."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import env, shard_records

from ddp_eval.config import load_config
from ddp_eval.errors import DdpEvalError
from ddp_eval.run.runner import Options, run
from ddp_eval.store.lock import OutputDirLock

QUIET = Options(show_progress=False)


def cli(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "ddp_eval", *map(str, args)], capture_output=True, text=True,
                          env=env(), timeout=timeout, **kw)


def test_second_run_on_a_busy_output_dir_is_refused_naming_the_holder_and_writes_nothing(config_file, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from ddp_eval.store.lock import OutputDirLock
        lock = OutputDirLock(Path({str(out)!r}), {{"world_size": 2}}).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "held"
        done = cli("--config", config_file, "--quiet", "--set", f"run.output_dir={out}")
        assert done.returncode == 2
        assert f"pid {holder.pid}" in done.stderr and "in use by another run" in done.stderr
        assert not (out / "shards").exists() or shard_records(out) == []
    finally:
        holder.kill()
        holder.wait()
    done = cli("--config", config_file, "--quiet", "--set", f"run.output_dir={out}", "--set", "data.limit=8")
    assert done.returncode == 0, done.stderr[-2000:]  # the dead holder left no lock behind
    assert len(shard_records(out)) == 8


def test_run_releases_the_output_dir_lock_when_it_fails(make_config, single_process, tmp_path):
    with pytest.raises(DdpEvalError):
        run(make_config("data.limit=4", "model.family=nope"), single_process, QUIET)
    OutputDirLock(tmp_path / "out").acquire().release()  # free again


def test_a_rank_stalled_at_start_up_is_named_with_its_host(tmp_path):
    script = tmp_path / "stall.py"
    script.write_text(textwrap.dedent("""
        import time
        from ddp_eval.distributed.group import checkpoint, distributed
        from ddp_eval.errors import DdpEvalError
        with distributed(60) as info:
            if info.rank == 1:
                time.sleep(8)
            try:
                checkpoint(info, "load the benchmark", 2)
            except DdpEvalError as err:
                print(f"rank {info.rank}: {err}", flush=True)
    """))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], capture_output=True, text=True, env=env(), timeout=90)
    host = os.uname().nodename
    assert f"rank 0: rank(s) 1 on {host} did not reach start-up step 'load the benchmark' within 2 s" in done.stdout


def test_an_error_while_loader_workers_run_ends_them(make_config, single_process, monkeypatch):
    # Any error the model raises while workers prepare later batches (a bad sampling setting used to raise
    # in generate, then the process waited forever joining a worker).
    import multiprocessing

    from ddp_eval.backends.hf.backend import HFBackend

    def broken(self, prepared):
        raise ValueError("the model refused this batch")

    monkeypatch.setattr(HFBackend, "replies", broken)
    kept = None
    try:
        run(make_config("run.num_workers=2", "run.batch_size=2"), single_process, QUIET)
    except ValueError as err:
        kept = err  # a caller that keeps the error keeps its traceback's frames alive
    left = multiprocessing.active_children()
    message, kept = str(kept), None
    assert message == "the model refused this batch"
    assert left == []


@pytest.mark.parametrize("overrides, message", [
    (["generation.greedy=false", "generation.temperature=0"], "generation.temperature must be > 0 when sampling"),
    (["generation.greedy=false", "generation.top_p=1.5"], "generation.top_p must be in (0, 1]"),
    (["run.dist_timeout_s=100000000000000000"], "run.dist_timeout_s must be at most"),
    (["run.output_dir="], "run.output_dir is empty"),
])
def test_settings_that_would_fail_later_are_refused_naming_the_key(overrides, message):
    with pytest.raises(DdpEvalError) as err:
        load_config(None, ["model.path=m", "data.path=d", *overrides])
    assert message in str(err.value)


def test_yaml_of_nested_aliases_gives_a_short_type_error(tmp_path):
    anchors = ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8))
    path = tmp_path / "bomb.yaml"
    path.write_text(f"run:\n  batch_size: [&a0 [x, x, x, x, x, x, x, x, x], {anchors}]\n")
    with pytest.raises(DdpEvalError) as err:
        load_config(path)
    assert "run.batch_size must be int" in str(err.value) and len(str(err.value)) < 400


def test_help_lists_the_run_options_and_no_arguments_asks_for_a_config():
    done = cli("--help")
    assert done.returncode == 0 and "--config" in done.stdout and "--dry-run" in done.stdout
    assert "score" in done.stdout and "doctor" in done.stdout
    done = cli()
    assert done.returncode == 2 and "no --config given" in done.stderr


def test_sigterm_during_start_up_exits_by_the_signal_with_the_resume_hint(config_file, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "ddp_eval", "--config", str(config_file), "--set",
                             f"run.output_dir={tmp_path / 'o'}"], stderr=subprocess.PIPE, text=True, env=env())
    time.sleep(1.5)  # importing torch and transformers, loading the benchmark
    proc.terminate()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and "re-run the same command to resume" in stderr


def test_a_row_longer_than_the_models_context_is_recorded_failed_and_the_run_finishes(make_config, single_process,
                                                                                      tmp_path, demo_tsv):
    import pandas as pd

    table = pd.read_csv(demo_tsv, sep="\t").head(6)
    table.loc[1, "question"] = "describe " * 6000  # ~6,000 tokens; the tiny checkpoint's context is 4,096
    path = tmp_path / "long.tsv"
    table.to_csv(path, sep="\t", index=False)
    for reuse in ("false", "true"):
        out = tmp_path / f"out_{reuse}"
        metrics = run(make_config(f"model.reuse_prefix={reuse}", f"run.output_dir={out}", data=path), single_process,
                      QUIET)
        failures = pd.read_csv(out / "failures.tsv", sep="\t")
        assert list(failures["index"]) == [int(table.loc[1, "index"])]
        assert "more than the model's context of 4096" in failures["error"][0]
        assert metrics["rows"] == 6 and metrics["failed"] == 1


def test_cpu_allocator_failure_is_treated_as_out_of_memory():
    from ddp_eval.backends.hf.backend import is_out_of_memory

    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 9663676416 bytes."))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_replaced_images_or_weights_at_the_same_paths_do_not_resume_old_shards(make_config, single_process,
                                                                               tiny_model, tmp_path):
    import shutil

    import pandas as pd
    from test_data import png_b64

    from ddp_eval.demo import build_checkpoint

    rows = [{"index": i, "question": f"q{i}", "A": "x", "B": "y", "answer": "A", "image": png_b64("red")}
            for i in range(4)]
    path = tmp_path / "b.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    run(make_config(data=path, model=model), single_process, QUIET)
    pd.DataFrame([{**r, "image": png_b64("blue")} for r in rows]).to_csv(path, sep="\t", index=False)
    with pytest.raises(DdpEvalError, match="holds shards of another run .*data_files"):
        run(make_config(data=path, model=model), single_process, QUIET)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)  # the old images again: resumes
    run(make_config(data=path, model=model), single_process, QUIET)
    other = build_checkpoint(tmp_path / "other", seed=1)
    shutil.copy(other / "model.safetensors", model / "model.safetensors")  # same config.json, new weights
    with pytest.raises(DdpEvalError, match="holds shards of another run .*model_files"):
        run(make_config(data=path, model=model), single_process, QUIET)


def test_dry_run_names_a_missing_model_before_anything_else(config_file, tmp_path):
    done = cli("--config", config_file, "--dry-run", "--set", f"model.path={tmp_path / 'absent'}",
               "--set", "data.path=MMBench_DEV_EN", "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert done.returncode == 2 and "model.path: no model directory" in done.stderr


def test_an_image_too_elongated_for_the_pixel_bounds_fails_its_row_saying_so(make_config, single_process,
                                                                            tmp_path):
    import base64
    import io

    import pandas as pd
    from PIL import Image

    def b64(size):
        buf = io.BytesIO()
        Image.new("RGB", size, "red").save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    rows = [{"index": i, "question": "q", "A": "x", "B": "y", "answer": "A", "image": b64(size)}
            for i, size in enumerate([(4000, 50), (64, 64)])]
    path = tmp_path / "thin.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    out = tmp_path / "out"
    run(make_config(f"run.output_dir={out}", data=path), single_process, QUIET)
    failures = pd.read_csv(out / "failures.tsv", sep="\t")
    assert list(failures["index"]) == [0]
    assert "4000x50 image resized within model.min_pixels=3136 and model.max_pixels=50176 keeps no pixels" \
        in failures["error"][0]


def test_score_refuses_an_empty_table_and_a_duplicated_index(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("index\tquestion\tA\tB\tanswer\tprediction\n")
    done = cli("score", empty)
    assert done.returncode == 2 and "has no rows" in done.stderr
    dup = tmp_path / "dup.tsv"
    dup.write_text("index\tquestion\tA\tB\tanswer\tprediction\n1\tq\tx\ty\tA\tA\n1\tq\tx\ty\tA\tB\n")
    done = cli("score", dup)
    assert done.returncode == 2 and "index 1 appears more than once" in done.stderr


def test_indices_beyond_float_precision_stay_apart_and_copies_without_an_original_are_no_circular_eval():
    from ddp_eval.data.cells import integer_index
    from ddp_eval.tasks.mcq.metrics import ScoredRow, has_circular

    assert integer_index("9007199254740993") != integer_index("9007199254740992")
    assert integer_index("inf") is None and integer_index(float("inf")) is None
    assert not has_circular([ScoredRow(9007199254740993, "c", "l", True), ScoredRow(9007199254740992, "c", "l",
                                                                                      False)])


def _model_copy(tiny_model, tmp_path, name: str, drop: tuple[str, ...] = ()):
    import shutil

    copy = tmp_path / name
    shutil.copytree(tiny_model, copy, ignore=shutil.ignore_patterns(*drop))
    return copy


def test_damaged_weights_a_missing_attention_package_and_missing_tokenizer_files_are_one_line_errors(tiny_model,
                                                                                                    tmp_path):
    import torch

    from ddp_eval.config import ModelConfig
    from ddp_eval.models.loading import load_auto_processor, load_pretrained

    cpu = torch.device("cpu")
    cut = _model_copy(tiny_model, tmp_path, "cut")
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(DdpEvalError, match=rf"the weights in {cut} cannot be read .*damaged or cut short"):
        load_pretrained(ModelConfig(path=str(cut), dtype="float32"), cpu)
    (cut / "model.safetensors").write_text("not weights")
    with pytest.raises(DdpEvalError, match="cannot be read"):
        load_pretrained(ModelConfig(path=str(cut), dtype="float32"), cpu)
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises(DdpEvalError, match="model.attn_implementation=flash_attention_2: "):
            load_pretrained(ModelConfig(path=str(tiny_model), dtype="float32",
                                        attn_implementation="flash_attention_2"), cpu)
    bare = _model_copy(tiny_model, tmp_path, "no_tokenizer", drop=("tokenizer.json", "tokenizer_config.json"))
    with pytest.raises(DdpEvalError, match=f"{bare} has no tokenizer files"):
        load_auto_processor(ModelConfig(path=str(bare)))


def test_bad_paths_given_on_the_command_line_are_one_line_errors(config_file, tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("model:\n  path: caf\xe9\n".encode("latin-1"))
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("x")
    predictions = tmp_path / "p.tsv"
    predictions.write_text("index\tquestion\tA\tB\tanswer\tprediction\n0\tq\ta\tb\tA\tA\n")
    for args, said in (
        (["--config", latin], f"config file {latin} is not UTF-8 text"),
        (["score", predictions, "--output-dir", in_the_way], f"output dir {in_the_way}: a file of that name"),
        (["prompts", "--config", config_file, "--limit", "1", "--out", tmp_path], "a directory; name the file"),
        (["prompts", "--config", config_file, "--limit", "1", "--out", in_the_way / "x.jsonl"], "cannot write there"),
        (["prompts", "--config", config_file, "--limit", "-3"], "must be >= 1, got -3"),
    ):
        done = cli(*args)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


def test_an_output_dir_that_is_a_file_and_an_image_file_that_is_no_image_are_named(make_config, single_process,
                                                                                   tmp_path):
    from ddp_eval.data.tsv import load_tsv

    in_the_way = tmp_path / "results"
    in_the_way.write_text("x")
    with pytest.raises(DdpEvalError, match=f"run.output_dir {in_the_way} is a file, not a folder"):
        run(make_config(f"run.output_dir={in_the_way}"), single_process, QUIET)
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "b.tsv").write_text("index\tquestion\timage_path\n1\tq\tnotes.png\n")
    with pytest.raises(DdpEvalError, match=rf"image of row index 1, {tmp_path / 'notes.png'}: cannot decode"):
        load_tsv(tmp_path / "b.tsv").images.open(1)
