from ddp_eval.core.prefixes import common_prefix_length, split_shared_prefixes
from ddp_eval.models.qwen2_vl.positions import rope_shift

IMG = 9  # image token id in these rows


def test_rotated_copies_share_everything_before_the_options():
    rows = [[1, IMG, IMG, 2, 3, 40, 41, 5], [1, IMG, IMG, 2, 3, 41, 40, 5], [1, IMG, IMG, 2, 3, 40, 42, 5]]
    shared = split_shared_prefixes(rows, ["a", "a", "a"], [3, 3, 3])
    assert shared.prefixes == [[1, IMG, IMG, 2, 3]]
    assert shared.owner == [0, 0, 0]
    assert shared.suffixes == [[40, 41, 5], [41, 40, 5], [40, 42, 5]]
    assert [p + s for p, s in zip([shared.prefixes[o] for o in shared.owner], shared.suffixes)] == rows


def test_every_row_keeps_its_last_token_even_when_rows_are_identical():
    rows = [[1, IMG, 2, 3], [1, IMG, 2, 3]]
    shared = split_shared_prefixes(rows, ["a", "a"], [2, 2])
    assert shared.prefixes == [[1, IMG, 2]] and shared.suffixes == [[3], [3]]


def test_rows_of_other_images_never_share_a_prefix():
    rows = [[1, IMG, 2, 3], [1, IMG, 2, 4], [1, IMG, 2, 5]]
    shared = split_shared_prefixes(rows, ["a", "b", "a"], [2, 2, 2])
    assert shared.owner == [0, 1, 0] and shared.image_key == ["a", "b"]
    assert shared.prefixes == [[1, IMG, 2], [1, IMG, 2]]
    assert shared.suffixes == [[3], [4], [5]]


def test_a_prefix_that_would_split_the_image_tokens_is_not_shared():
    # Same image key, but the rows differ before the image ends (e.g. different system prompts).
    rows = [[1, 7, IMG, IMG, 2], [1, 8, IMG, IMG, 2]]
    shared = split_shared_prefixes(rows, ["a", "a"], [4, 4])
    assert shared.owner == [0, 1]
    assert shared.prefixes == [[1, 7, IMG, IMG], [1, 8, IMG, IMG]]


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5], [6]]) == 0


def test_rope_shift_follows_qwen2_vl_rotary_positions():
    # 1 x 4 x 6 patches, merge 2: 6 tokens, the position advances by max(4, 6) / 2 = 3.
    assert rope_shift([(1, 4, 6)], 2) == 3 - 6
    assert rope_shift([(1, 4, 6), (1, 2, 2)], 2) == (3 - 6) + (1 - 1)
