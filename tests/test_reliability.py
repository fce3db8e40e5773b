"""Faults a long sweep meets: bad images, out of memory, dead or hung ranks, foreign shards, crashes."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from ddp_eval.backends.hf.backend import predict_batch
from ddp_eval.core.batch import PreparedBatch
from ddp_eval.demo import build_benchmark_rows, write_tsv
from ddp_eval.distributed import completion
from ddp_eval.errors import DdpEvalError
from ddp_eval.run.runner import Options, run
from ddp_eval.store.atomic import atomic_write_text

QUIET = Options(show_progress=False)


def shard_lines(out: Path) -> list[dict]:
    lines = [json.loads(x) for p in sorted((out / "shards").glob("*.jsonl")) for x in p.read_text().splitlines()]
    return [r for r in lines if "index" in r]


@pytest.fixture
def broken_tsv(tmp_path) -> Path:
    """The demo benchmark's first 12 rows: four with unusable images, one without any (left out, as VLMEvalKit
    leaves it out)."""
    rows = [r for r in build_benchmark_rows() if r["index"] < 1_000_000][:12]
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buf, format="PNG")
    rows[1]["image"] = "%%% not base64 at all, and longer than sixty-four characters so not a reference %%%"
    rows[2]["image"] = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 200).decode()  # undecodable
    rows[3]["image"] = None  # missing: the row is not part of the benchmark
    rows[4]["image"] = base64.b64encode(buf.getvalue()[:60] + b"\0" * 40).decode()  # truncated PNG
    rows[5]["image"] = base64.b64encode(b"P6\n0 5\n255\n" + b"\0" * 60).decode()  # a 0-pixel image
    return write_tsv(rows, tmp_path / "broken.tsv")


@pytest.mark.parametrize("reuse", ["model.reuse_prefix=false", "model.reuse_prefix=true"])
def test_rows_with_bad_images_are_recorded_failed_and_the_run_finishes(reuse, make_config, single_process,
                                                                        broken_tsv, tmp_path):
    metrics = run(make_config(reuse, data=broken_tsv), single_process, QUIET)
    out = tmp_path / "out"
    failures = pd.read_csv(out / "failures.tsv", sep="\t")
    assert sorted(failures["index"]) == [1, 2, 4, 5]
    assert all(isinstance(e, str) and e for e in failures["error"])
    assert metrics["failed"] == 4 and metrics["rows"] == 11
    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    assert 3 not in set(table["index"])
    bad = table[table["index"].isin([1, 2, 4, 5])]
    assert set(bad["extracted"]) == {"Z"} and set(bad["hit"]) == {0}
    assert (table[~table["index"].isin([1, 2, 4, 5])]["error"] == "").all()

    before = len(shard_lines(out))
    run(make_config(reuse, data=broken_tsv), single_process, Options(show_progress=False, retry_failed=True))
    retried = shard_lines(out)[before:]
    assert sorted(r["index"] for r in retried) == [1, 2, 4, 5]  # only the failed rows again


def test_out_of_memory_splits_down_to_one_row_before_failing():
    calls = []

    def prepare(indices):
        return PreparedBatch(batch_id=0, indices=tuple(indices), inputs=list(indices))

    def replies(prepared):
        inputs = prepared.inputs
        calls.append(len(inputs))
        if len(inputs) > 2 or 13 in inputs:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [f"r{i}" for i in inputs]

    records = predict_batch(replies, prepare(range(10, 17)), prepare)
    by_index = {r["index"]: r for r in records}
    assert sorted(by_index) == list(range(10, 17))
    assert by_index[13]["error"].startswith("CUDA out of memory")
    assert all(by_index[i]["prediction"] == f"r{i}" for i in by_index if i != 13)
    assert calls[0] == 7


def test_other_runtime_errors_are_not_mistaken_for_out_of_memory():
    def replies(prepared):
        raise RuntimeError("shape mismatch")

    batch = PreparedBatch(batch_id=0, indices=(1, 2), inputs=[1, 2])
    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict_batch(replies, batch, lambda part: batch)


def test_waiting_for_a_missing_rank_times_out_naming_it_and_its_shard(tmp_path):
    completion.mark(tmp_path, "run1", 0, "done")
    completion.mark(tmp_path, "old", 1, "done")  # a stale marker from an earlier run does not count
    with pytest.raises(DdpEvalError) as err:
        completion.wait_for_ranks(tmp_path, "run1", 2, timeout_s=0.3, poll_s=0.05)
    assert "rank(s) 1 did not finish within 0 s" in str(err.value)
    assert "rank001-of-002.jsonl" in str(err.value)


def test_a_failed_rank_is_reported_with_its_reason(tmp_path):
    completion.mark(tmp_path, "r", 0, "done")
    completion.mark(tmp_path, "r", 1, "failed", "RuntimeError: CUDA error")
    with pytest.raises(DdpEvalError, match="rank 1: RuntimeError: CUDA error"):
        completion.wait_for_ranks(tmp_path, "r", 2, timeout_s=5)


def test_output_dir_with_another_runs_shards_is_refused(make_config, single_process, demo_tsv, tmp_path):
    run(make_config("data.limit=6"), single_process, QUIET)
    with pytest.raises(DdpEvalError, match="holds shards of another run .*max_new_tokens"):
        run(make_config("data.limit=6", "generation.max_new_tokens=3"), single_process, QUIET)
    with pytest.raises(DdpEvalError, match="holds shards of another run .*repetition_penalty"):
        run(make_config("data.limit=6", "generation.repetition_penalty=1.05"), single_process, QUIET)
    run(make_config("data.limit=6", "model.reuse_prefix=true"), single_process, QUIET)  # speed switches resume
    other = write_tsv(build_benchmark_rows(n_questions=4, seed=1), tmp_path / "other.tsv")
    with pytest.raises(DdpEvalError, match="holds shards of another run .*benchmark"):
        run(make_config(data=other), single_process, QUIET)


def test_output_dir_that_cannot_be_written_is_named(make_config, single_process, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DdpEvalError, match=f"run.output_dir: cannot write to {blocker / 'out'}"):
        run(make_config(f"run.output_dir={blocker / 'out'}"), single_process, QUIET)


def test_crash_while_writing_a_final_file_leaves_the_old_one_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, '{"old": true}\n')

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_text(path, '{"new": ' + "1" * 10_000)
    assert path.read_text() == '{"old": true}\n'


def test_model_dir_without_processor_is_named(make_config, single_process, tiny_model, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_model / "config.json").read_text())
    with pytest.raises(DdpEvalError, match=f"cannot load a processor from {bare}"):
        run(make_config(model=bare), single_process, QUIET)


def test_empty_benchmark_is_named(make_config, single_process, tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("index\tquestion\tA\tB\tanswer\timage\n")
    with pytest.raises(DdpEvalError, match="has no rows"):
        run(make_config(data=empty), single_process, QUIET)


def test_a_file_with_some_answers_missing_is_refused_before_anything_is_predicted(make_config, single_process,
                                                                                  tmp_path):
    from ddp_eval.run.dryrun import describe

    rows = [r for r in build_benchmark_rows() if r["index"] < 1_000_000][:6]
    rows[2]["answer"] = None
    tsv = write_tsv(rows, tmp_path / "some_answers.tsv")
    said = rf"{tsv}: 1 of 6 rows have no answer \(index 2\).*scoring.enabled=false"
    with pytest.raises(DdpEvalError, match=said):
        describe(make_config(data=tsv), 1)  # --dry-run
    with pytest.raises(DdpEvalError, match=said):
        run(make_config(data=tsv), single_process, QUIET)
    assert not (tmp_path / "out" / "shards").exists()  # nothing predicted, nothing to lose
    metrics = run(make_config("scoring.enabled=false", data=tsv), single_process, QUIET)
    assert metrics is None and len(pd.read_csv(tmp_path / "out" / "predictions.tsv", sep="\t")) == 6


def test_a_benchmark_file_the_run_would_overwrite_with_its_results_is_refused(make_config, single_process, demo_tsv,
                                                                             tmp_path):
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(demo_tsv, out / "predictions.tsv")
    before = (out / "predictions.tsv").read_bytes()
    with pytest.raises(DdpEvalError, match="is inside run.output_dir .* the results would replace the benchmark"):
        run(make_config(data=out / "predictions.tsv"), single_process, QUIET)
    assert (out / "predictions.tsv").read_bytes() == before


def test_a_run_that_stopped_before_its_first_batch_does_not_block_one_with_other_settings(make_config, single_process,
                                                                                          tiny_model, tmp_path):
    import shutil

    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_text("not weights")
    with pytest.raises(DdpEvalError, match="cannot be read"):
        run(make_config(model=broken), single_process, QUIET)
    assert [len(p.read_text().splitlines()) for p in (tmp_path / "out" / "shards").glob("*.jsonl")] == [1]  # header
    assert run(make_config(), single_process, QUIET)["rows"] == 78
