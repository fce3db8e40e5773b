"""Shard faults: duplicates already on disk, a last record without its newline, a full disk."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from ddp_eval.config import DataConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.store import shards
from ddp_eval.store.gather import gather_predictions
from ddp_eval.store.shards import ShardWriter, done_indices, merge_records, read_shards, shard_path
from ddp_eval.tasks.load import load_benchmark

IDENTITY = {"benchmark": "b", "model": "m"}


def write_shard(path: Path, records: list[dict], identity: dict | None = IDENTITY) -> None:
    with ShardWriter(path, identity) as w:
        w.write_batch(records)


def merged(out: Path, expected: list[int]) -> dict[int, dict]:
    contents = read_shards(out)
    return merge_records(contents.records, expected, contents.origins)


# 1. Duplicates on disk are resolved, never counted twice


def test_two_successes_for_one_index_keep_the_first_in_shard_file_then_line_order(tmp_path, caplog):
    # rank001 is written first: file order, not write order, decides
    write_shard(shard_path(tmp_path, 1, 2), [{"index": 1, "prediction": "late"}, {"index": 2, "prediction": "B"}])
    write_shard(shard_path(tmp_path, 0, 2), [{"index": 1, "prediction": "first"}, {"index": 3, "prediction": "C"},
                                             {"index": 3, "prediction": "C again"}])
    with caplog.at_level(logging.WARNING, logger="ddp_eval.store.shards"):
        result = merged(tmp_path, [1, 2, 3])
    assert {i: r["prediction"] for i, r in result.items()} == {1: "first", 2: "B", 3: "C"}
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "2 rows have more than one successful record (index 1, 3)" in warning
    assert "rank000-of-002.jsonl" in warning and "rank001-of-002.jsonl" in warning
    assert done_indices(read_shards(tmp_path)) == set(result) == {1, 2, 3}


def test_gathered_table_has_each_row_once_when_two_writers_appended_the_same_rows(tmp_path):
    bench_file = tmp_path / "b.tsv"
    pd.DataFrame([{"index": i, "question": f"q{i}", "A": "x", "B": "y", "answer": "A",
                   "image_path": "none.png"} for i in range(4)]).to_csv(bench_file, sep="\t", index=False)
    benchmark = load_benchmark(DataConfig(path=str(bench_file)))
    out = tmp_path / "out"
    rows = [{"index": i, "prediction": "A"} for i in range(4)]
    write_shard(shard_path(out, 0, 1), rows)
    write_shard(shard_path(out, 0, 2), rows[:2])  # a second run (world size 2) on the same dir
    write_shard(shard_path(out, 1, 2), rows[2:])
    table = gather_predictions(benchmark, out)
    assert list(table["index"]) == [0, 1, 2, 3] and list(table["prediction"]) == ["A"] * 4


def test_a_later_success_supersedes_failures_and_retry_failed_agrees_with_the_merge(tmp_path):
    write_shard(shard_path(tmp_path, 0, 1), [
        {"index": 1, "prediction": "", "error": "oom"}, {"index": 1, "prediction": "A"},
        {"index": 1, "prediction": "", "error": "oom again"}, {"index": 1, "prediction": "B"},
        {"index": 2, "prediction": "", "error": "bad image"}, {"index": 2, "prediction": "", "error": "still bad"},
    ])
    result = merged(tmp_path, [1, 2])
    assert result[1]["prediction"] == "A" and not result[1].get("error")
    assert result[2]["error"] == "still bad"  # the last failure, as before
    contents = read_shards(tmp_path)
    assert done_indices(contents) == set(result)
    assert done_indices(contents, retry_failed=True) == {i for i, r in result.items() if not r.get("error")} == {1}


def test_duplicates_do_not_hide_missing_or_foreign_rows(tmp_path):
    write_shard(shard_path(tmp_path, 0, 1), [{"index": 1, "prediction": "A"}, {"index": 1, "prediction": "A"},
                                             {"index": 7, "prediction": "A"}])
    with pytest.raises(DdpEvalError, match=r"1 missing \(e.g. 2\); 1 not in the benchmark \(7\)"):
        merged(tmp_path, [1, 2])


# 2. Whatever the reader counts done stays on disk


def _shard_with_tail(out: Path, tail: bytes) -> Path:
    path = shard_path(out, 0, 1)
    write_shard(path, [{"index": 1, "prediction": "A"}])
    with path.open("ab") as f:
        f.write(tail)
    return path


@pytest.mark.parametrize("tail, counted", [
    (b'{"index": 2, "prediction": "B"}', True),  # whole record, newline missing
    (b'{"index": 2, "prediction": "B"}   ', True),
    (b'{"index": 2, "predic', False),  # cut mid-write
    ('{"index": 2, "prediction": "caf\u00e9"}'.encode()[:-3], False),  # cut inside a UTF-8 character
    (b'{"note": "no index"}', False),
    (b"2", False),
    (b"   ", False),
])
def test_reader_and_writer_agree_on_a_last_line_without_newline(tmp_path, tail, counted):
    path = _shard_with_tail(tmp_path, tail)
    before = done_indices(read_shards(tmp_path))
    assert before == ({1, 2} if counted else {1})
    with ShardWriter(path, IDENTITY) as w:  # what a resume does first
        assert done_indices(read_shards(tmp_path)) == before
        w.write_batch([{"index": 3, "prediction": "C"}])
    assert path.read_bytes().endswith(b"\n")
    assert done_indices(read_shards(tmp_path)) == before | {3}
    assert [json.loads(line).get("index") for line in path.read_text().splitlines()] == \
        [None, 1, *([2] if counted else []), 3]


def test_a_record_without_newline_is_not_lost_on_resume(tmp_path):
    path = shard_path(tmp_path, 0, 1)
    write_shard(path, [{"index": 1, "prediction": "A"}, {"index": 2, "prediction": "B"}])
    path.write_bytes(path.read_bytes()[:-1])  # the last record loses its newline
    done = done_indices(read_shards(tmp_path))
    assert done == {1, 2}
    with ShardWriter(path, IDENTITY) as w:  # the rows not done are predicted and appended
        w.write_batch([{"index": 3, "prediction": "C"}])
    assert set(merged(tmp_path, [1, 2, 3])) == {1, 2, 3}  # no "1 missing"


def test_a_damaged_line_in_the_middle_names_file_and_line(tmp_path):
    path = shard_path(tmp_path, 0, 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"ddp_eval_shard": 1, "identity": {}}\n{"index": 1}\n{"index": "one"}\n{"index": 2}\n')
    with pytest.raises(DdpEvalError, match=r"rank000-of-001.jsonl, line 3: a record without an integer index"):
        read_shards(tmp_path)


def test_a_reply_with_a_lone_surrogate_is_written_and_read_back(tmp_path):
    write_shard(shard_path(tmp_path, 0, 1), [{"index": 1, "prediction": "a\ud800b"}])
    assert merged(tmp_path, [1])[1]["prediction"] == "a\ud800b"


# 3. A full disk: one line naming the shard and the free space, the shard left as it was


class FailingWrites:
    """os.write on the shard writes half of what it is given once, then fails with `code`."""

    def __init__(self, fd: int, code: int) -> None:
        self.fd, self.code, self.calls = fd, code, 0
        self.real = os.write

    def __call__(self, fd: int, data) -> int:
        if fd != self.fd:
            return self.real(fd, data)
        self.calls += 1
        if self.calls == 1:
            return self.real(fd, bytes(data[: len(data) // 2]))
        raise OSError(self.code, os.strerror(self.code))


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "quota")])
def test_full_disk_names_shard_and_free_space_and_leaves_the_shard_as_it_was(tmp_path, monkeypatch, code, says):
    path = shard_path(tmp_path, 0, 1)
    writer = ShardWriter(path, IDENTITY)
    writer.write_batch([{"index": 1, "prediction": "A"}])
    before = path.read_bytes()
    monkeypatch.setattr(shards.os, "write", FailingWrites(writer._fd, code))
    with pytest.raises(DdpEvalError) as err:
        writer.write_batch([{"index": 2, "prediction": "B" * 100}, {"index": 3, "prediction": "C" * 100}])
    message = str(err.value)
    assert "\n" not in message and str(path) in message and says in message
    assert "MiB free" in message and "re-run the same command to resume" in message
    assert path.read_bytes() == before  # the half-written batch is cut off
    monkeypatch.undo()
    writer.close()
    write_shard(path, [{"index": 2, "prediction": "B"}])  # after freeing space: resume appends
    assert done_indices(read_shards(tmp_path)) == {1, 2}


def test_full_disk_at_fsync_cuts_the_batch_written_to_the_page_cache(tmp_path, monkeypatch):
    path = shard_path(tmp_path, 0, 1)
    with ShardWriter(path, IDENTITY) as writer:
        before = path.read_bytes()

        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(shards.os, "fsync", fsync)
        with pytest.raises(DdpEvalError, match="the disk is full"):
            writer.write_batch([{"index": 1, "prediction": "A"}])
        monkeypatch.undo()
    assert path.read_bytes() == before and done_indices(read_shards(tmp_path)) == set()


def test_when_the_cut_back_fails_too_the_half_line_is_not_counted(tmp_path, monkeypatch):
    path = shard_path(tmp_path, 0, 1)
    with ShardWriter(path, IDENTITY) as writer:
        monkeypatch.setattr(shards.os, "write", FailingWrites(writer._fd, errno.ENOSPC))

        def ftruncate(fd, size):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(shards.os, "ftruncate", ftruncate)
        with pytest.raises(DdpEvalError, match="the disk is full"):
            writer.write_batch([{"index": 1, "prediction": "A" * 200}])
        monkeypatch.undo()
    assert not path.read_bytes().endswith(b"\n")  # half a line is left on disk ...
    assert done_indices(read_shards(tmp_path)) == set()  # ... and not counted
    write_shard(path, [{"index": 1, "prediction": "A"}])  # the next writer cuts it
    assert done_indices(read_shards(tmp_path)) == {1} and len(read_shards(tmp_path).identities) == 1


def test_full_disk_while_writing_the_header_is_a_one_line_error(tmp_path, monkeypatch):
    def write(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shards.os, "write", write)
    path = shard_path(tmp_path, 0, 1)
    with pytest.raises(DdpEvalError, match=r"rank000-of-001.jsonl: cannot write predictions, the disk is full \("):
        ShardWriter(path, IDENTITY)
    monkeypatch.undo()
    assert path.read_bytes() == b""


def test_the_checkpoint_digest_hashed_in_a_thread_equals_the_direct_one_and_raises_its_error(tmp_path, monkeypatch):
    from ddp_eval.config import Config, ModelConfig
    from ddp_eval.store import digests
    from ddp_eval.store.identity import ModelDigest

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(1 << 20))
    cfg = Config(model=ModelConfig(path=str(model)), data=DataConfig(path="x", cache_dir=str(tmp_path / "cache")))
    direct = digests.files_digest(digests.model_files(model), None)
    assert ModelDigest(cfg).result() == direct
    assert ModelDigest(cfg).result() == direct  # from the digest cache the first one wrote

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(digests, "_sha256", unreadable)
    (model / "model.safetensors").write_bytes(os.urandom(1 << 10))  # a changed file is hashed again
    with pytest.raises(PermissionError, match="model.safetensors"):
        ModelDigest(cfg).result()
