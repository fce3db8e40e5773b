import pytest

from ddp_eval.errors import DdpEvalError
from ddp_eval.store.shards import ShardWriter, check_identity, done_indices, merge_records, read_shards, shard_path

IDENTITY = {"benchmark": "b", "model": "m"}


def test_cut_last_line_is_ignored_then_trimmed_before_append(tmp_path):
    path = shard_path(tmp_path, 0, 2)
    with ShardWriter(path, IDENTITY) as w:
        w.write_batch([{"index": 1, "prediction": "A"}, {"index": 2, "prediction": "B"}])
    with path.open("a") as f:
        f.write('{"index": 3, "predic')  # a crash mid-write
    assert done_indices(read_shards(tmp_path)) == {1, 2}
    with ShardWriter(path, IDENTITY) as w:
        w.write_batch([{"index": 3, "prediction": "C"}])
    contents = read_shards(tmp_path)
    assert [r["index"] for r in contents.records] == [1, 2, 3]
    assert list(contents.identities.values()) == [IDENTITY]  # one header, not re-written on append


def test_shards_of_all_world_sizes_are_read(tmp_path):
    with ShardWriter(shard_path(tmp_path, 0, 3), IDENTITY) as w:
        w.write_batch([{"index": 1, "prediction": "A"}])
    with ShardWriter(shard_path(tmp_path, 1, 2), IDENTITY) as w:
        w.write_batch([{"index": 2, "prediction": "B"}])
    assert done_indices(read_shards(tmp_path)) == {1, 2}


def test_shards_of_another_run_are_refused_naming_the_difference(tmp_path):
    with ShardWriter(shard_path(tmp_path, 0, 1), IDENTITY):
        pass
    with pytest.raises(DdpEvalError, match="benchmark: 'b' there, 'other' now"):
        check_identity(read_shards(tmp_path), {**IDENTITY, "benchmark": "other"}, tmp_path)
    check_identity(read_shards(tmp_path), dict(IDENTITY), tmp_path)


def test_merge_names_missing_and_foreign_rows_but_not_a_duplicate():
    records = [{"index": 1}, {"index": 1}, {"index": 9}]
    with pytest.raises(DdpEvalError) as err:
        merge_records(records, [1, 2])
    text = str(err.value)
    assert "1 missing (e.g. 2)" in text and "not in the benchmark (9)" in text
    assert "more than once" not in text and "\n" not in text


def test_failed_record_is_superseded_by_a_later_success():
    records = [{"index": 1, "prediction": "", "error": "bad image"}, {"index": 1, "prediction": "A"},
               {"index": 2, "prediction": "", "error": "bad image"}]
    merged = merge_records(records, [1, 2])
    assert merged[1]["prediction"] == "A" and merged[2]["error"] == "bad image"


def test_retry_failed_leaves_failed_rows_to_do(tmp_path):
    with ShardWriter(shard_path(tmp_path, 0, 1), IDENTITY) as w:
        w.write_batch([{"index": 1, "prediction": "A"}, {"index": 2, "prediction": "", "error": "x"}])
    assert done_indices(read_shards(tmp_path)) == {1, 2}
    assert done_indices(read_shards(tmp_path), retry_failed=True) == {1}


def test_damaged_middle_line_is_an_error(tmp_path):
    path = shard_path(tmp_path, 0, 1)
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + '{"index": 1}\nnot json\n{"index": 2}\n')
    with pytest.raises(DdpEvalError, match="line 3: not valid JSON; the shard is damaged: delete the line"):
        read_shards(tmp_path)


HEADER = '{"ddp_eval_shard": 1, "identity": {"benchmark": "b", "model": "m"}}\n'


@pytest.mark.parametrize("first", ['{"index": 1, "prediction": "A"}\n', 'not json\n', '\n{"index": 1}\n'])
def test_a_shard_whose_first_line_is_not_its_header_is_refused_and_deleting_it_is_the_advice(tmp_path, first):
    """Without the run identity nothing says which benchmark, model and settings predicted the rows: such a
    shard must not pass as this run's (deleting a damaged first line would make it one)."""
    path = shard_path(tmp_path, 0, 1)
    path.parent.mkdir(parents=True)
    path.write_text(first + '{"index": 2, "prediction": "B"}\n')
    with pytest.raises(DdpEvalError, match=r"line [12]: .*delete the shard \(its rows are predicted again\)"):
        read_shards(tmp_path)
