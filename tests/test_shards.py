import pytest

from ddp_eval.errors import DdpEvalError
from ddp_eval.shards import ShardWriter, done_indices, merge_records, read_shards, shard_path


def test_cut_last_line_is_ignored_then_trimmed_before_append(tmp_path):
    path = shard_path(tmp_path, 0, 2)
    with ShardWriter(path) as w:
        w.write_batch([{"index": 1, "prediction": "A"}, {"index": 2, "prediction": "B"}])
    with path.open("a") as f:
        f.write('{"index": 3, "predic')  # a crash mid-write
    assert done_indices(tmp_path) == {1, 2}
    with ShardWriter(path) as w:
        w.write_batch([{"index": 3, "prediction": "C"}])
    assert [r["index"] for r in read_shards(tmp_path)] == [1, 2, 3]


def test_shards_of_all_world_sizes_are_read(tmp_path):
    with ShardWriter(shard_path(tmp_path, 0, 3)) as w:
        w.write_batch([{"index": 1, "prediction": "A"}])
    with ShardWriter(shard_path(tmp_path, 1, 2)) as w:
        w.write_batch([{"index": 2, "prediction": "B"}])
    assert done_indices(tmp_path) == {1, 2}


def test_merge_names_missing_duplicate_and_foreign_rows():
    records = [{"index": 1}, {"index": 1}, {"index": 9}]
    with pytest.raises(DdpEvalError) as err:
        merge_records(records, [1, 2])
    text = str(err.value)
    assert "1 missing (e.g. 2)" in text and "more than once (1)" in text and "not in the benchmark (9)" in text


def test_damaged_middle_line_is_an_error(tmp_path):
    path = shard_path(tmp_path, 0, 1)
    path.parent.mkdir(parents=True)
    path.write_text('{"index": 1}\nnot json\n{"index": 2}\n')
    with pytest.raises(DdpEvalError, match="line 2"):
        read_shards(tmp_path)
