import math

from ddp_eval.tasks.mcq.metrics import ScoredRow, accuracy, circular_rows, has_circular


def row(index, hit, cat="c1", l2="p1"):
    return ScoredRow(index=index, category=cat, l2_category=l2, hit=hit)


def test_accuracy_overall_and_by_category():
    rows = [row(0, True, "x"), row(1, False, "x"), row(2, True, "y")]
    acc = accuracy(rows)
    assert math.isclose(acc["overall"], 2 / 3)
    assert acc["category"] == {"x": 0.5, "y": 1.0}
    assert acc["l2-category"] == {"p1": 2 / 3}


def test_circular_group_counts_only_if_every_variant_is_right():
    rows = [row(0, True), row(1_000_000, True), row(2_000_000, False),
            row(1, True), row(1_000_001, True),
            row(2, True)]
    assert has_circular(rows)
    groups = circular_rows(rows)
    assert [(g.index, g.hit) for g in groups] == [(0, False), (1, True), (2, True)]


def test_no_circular_when_all_indices_below_offset():
    assert not has_circular([row(0, True), row(999_999, False)])


def test_negative_indices_are_not_circular_copies():
    rows = [ScoredRow(-3, "c", "l", True), ScoredRow(-1_000_003, "c", "l", False), ScoredRow(5, "c", "l", True)]
    assert not has_circular(rows)
