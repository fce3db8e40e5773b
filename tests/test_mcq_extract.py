import pytest

from ddp_eval.tasks.mcq.extract import extract_option

CHOICES = {"A": "red", "B": "green", "C": "blue", "D": "yellow"}


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("A", "A"),
        ("B.", "B"),
        ("(C)", "C"),
        ("The answer is D", "D"),
        ("**B**", "B"),
        ("green", "B"),                       # option text
        ("It is blue.", "C"),                 # text inside a short reply
        ("red or green", "Z"),                # two option texts: no match
        ("A and B", "Z"),                     # two letters, no 'answer is'
        ("Z", "Z"),                           # explicit no-answer token
        ("", "Z"),
        ("I think that C is right, because the shape is round and filled", "Z"),  # letter too early
        ("C is the answer. The answer is C", "C"),
        ("Cannot determine the answer", "Z"),  # refusal phrase
        ("The correct answer is **a**", "A"),  # 'answer is' is case-insensitive
        ("E", "Z"),                           # not an option letter
        ("nan", "Z"),
    ],
)
def test_extraction_follows_vlmevalkit_can_infer(reply, expected):
    assert extract_option(reply, dict(CHOICES)) == expected


def test_letter_not_in_options_is_ignored_for_three_options():
    assert extract_option("D", {"A": "x", "B": "y", "C": "z"}) == "Z"


def test_two_letters_fall_back_to_answer_is_phrase():
    assert extract_option("Between A and B, the answer is B", dict(CHOICES)) == "B"


def test_long_reply_skips_text_matching():
    assert extract_option("blue " * 40, dict(CHOICES)) == "Z"


def test_numeric_options_are_compared_as_strings():
    assert extract_option("3", {"A": 3, "B": 5}) == "A"
    assert extract_option("3", {"A": 3.0, "B": 5.0}) == "Z"  # pandas float cells read as '3.0'


def test_api_failure_marker_still_allows_text_match():
    choices = {"A": "red", "B": "a very long green option text"}
    assert extract_option("Failed to obtain answer via API red", choices) == "A"
