"""VQA-family scoring and prompts against values worked out by hand from VLMEvalKit's code.

References: vqa_eval.py = vlmeval/dataset/utils/vqa_eval.py, misc.py = vlmeval/smp/misc.py,
image_vqa.py = vlmeval/dataset/image_vqa.py.
"""

import math

import pytest

from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.vqa.prompt import dataset_prompt
from ddp_eval.tasks.vqa.scoring import (
    HEADLINE_METRIC,
    anls_distance,
    anls_score,
    benchmark_metrics,
    normalize_answer,
    ocrbench_hit,
    ocrbench_metrics,
    parse_answers,
    relaxed_accuracy,
    row_hit,
    vqa_metrics,
    vqa_score,
)

HME = "Handwritten Mathematical Expression Recognition"

# --- normalisation: vqa_eval.process_answer = misc.process_punctuation + vqa_eval._process_digit_article


def test_normalize_drops_articles_and_trailing_period_and_lowercases():
    assert normalize_answer("The Cat.") == "cat"
    assert normalize_answer("a an the dog") == "dog"


def test_normalize_turns_number_words_into_digits_but_only_up_to_ten():
    assert normalize_answer("two dogs") == "2 dogs"
    assert normalize_answer("none") == "0"
    assert normalize_answer("ten eleven") == "10 eleven"


def test_normalize_restores_contractions_after_removing_articles():
    assert normalize_answer("dont") == "don't"
    assert normalize_answer("the whats") == "what's"
    assert normalize_answer("isnt it") == "isn't it"
    # the VQA table maps this one backwards
    assert normalize_answer("somebody'd") == "somebodyd"


def test_normalize_punctuation_next_to_space_is_deleted_else_becomes_space():
    # '-' touches no space: replaced by a space; ',' is followed by a space: deleted.
    assert normalize_answer("a-b, c") == "b c"  # 'a' is then an article
    assert normalize_answer("hello-world") == "hello world"


def test_normalize_digit_comma_digit_anywhere_deletes_every_mark():
    assert normalize_answer("1,000") == "1000"
    assert normalize_answer("3,000 well-known") == "3000 wellknown"


def test_normalize_keeps_periods_touching_digits():
    assert normalize_answer("3.5") == "3.5"
    assert normalize_answer("e.g.") == "eg"
    assert normalize_answer("mr. 3. end") == "mr 3. end"


def test_normalize_removes_at_most_32_lone_periods():
    # periodStrip.sub('', text, re.UNICODE) passes re.UNICODE (32) as the count
    assert normalize_answer("x" + "." * 40) == "x" + "." * 8


def test_normalize_treats_newlines_and_tabs_as_spaces():
    assert normalize_answer(" New\nYork\t") == "new york"


# --- the answer cell: vqa_eval.process_line (istype + eval of the printed list)


def test_textvqa_cell_with_ten_answers_parses_to_a_list():
    cell = str(["dakota"] * 5 + ["dakota digital"] * 3 + ["nous les gosses", "clos culombu"])
    answers = parse_answers(cell)
    assert len(answers) == 10 and answers[0] == "dakota" and answers[-1] == "clos culombu"


def test_plain_answer_cell_is_one_answer():
    assert parse_answers("12.5") == ["12.5"]
    assert parse_answers("Yes") == ["Yes"]
    assert parse_answers("1/8") == ["1/8"]


# --- TextVQA: vqa_eval.process_line(method='vqa_score') then hit_calculate = np.mean(match)


@pytest.mark.parametrize(
    "matches, expected",
    # k of 10 answers equal the prediction: k annotators score min(1,(k-1)/3), 10-k score min(1,k/3)
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_score_is_leave_one_out_average(matches, expected):
    answers = ["dakota"] * matches + ["other"] * (10 - matches)
    assert math.isclose(vqa_score("dakota", answers), expected, abs_tol=1e-12)


def test_vqa_score_normalizes_prediction_and_answers():
    # "The two." -> "2"; "Two", "2", "two" match; "2." keeps its period (it follows a digit): 3 matches
    answers = parse_answers(str(["Two", "2", "2.", "two", "three", "3", "3", "4", "5", "6"]))
    assert math.isclose(vqa_score("The two.", answers), 0.9)


def test_vqa_score_of_single_answer_is_always_zero():
    # with one answer, the leave-one-out set is empty: no annotator can agree
    assert vqa_score("dakota", ["dakota"]) == 0.0


# --- DocVQA: vqa_eval.anls_compute, hit_calculate (0 when 1 - min < 0.5)


def test_anls_exact_and_case_whitespace_insensitive():
    assert anls_score("hello", ["hello"]) == 1.0
    assert anls_score("  HELLO   World ", ["hello world"]) == 1.0


def test_anls_above_threshold_keeps_similarity():
    assert math.isclose(anls_score("hallo", ["hello"]), 0.8)  # 1 edit / 5 chars


def test_anls_exactly_half_is_kept():
    assert anls_score("abxy", ["abcd"]) == 0.5  # 2 edits / 4 chars, not below 0.5


def test_anls_below_threshold_is_zero():
    assert anls_score("axyze", ["abcde"]) == 0.0  # 1 - 3/5 = 0.4


def test_anls_takes_best_answer():
    assert anls_score("hello", ["xyz", "hello"]) == 1.0


def test_anls_divides_by_raw_unstripped_length():
    # compared: "12" vs "1 2" (1 edit); divided by len(" 1 2 ") = 5, not 3
    assert math.isclose(anls_distance("12", " 1 2 "), 0.2)
    assert math.isclose(anls_score(" 1 2 ", ["12"]), 0.8)


def test_anls_two_empty_strings_match():
    assert anls_score("", [""]) == 1.0


# --- ChartQA: vqa_eval.relaxed_correctness, process_line(method='relaxed_accuracy'), hit = max


def test_relaxed_accuracy_allows_five_percent_on_numbers():
    assert relaxed_accuracy("12.5", ["12"]) == 1.0  # 0.5 / 12 = 4.2 %
    assert relaxed_accuracy("10.5", ["10"]) == 1.0  # exactly 5 %
    assert relaxed_accuracy("10.6", ["10"]) == 0.0


def test_relaxed_accuracy_reads_percent_as_hundredths():
    assert relaxed_accuracy("0.45", ["45%"]) == 1.0
    assert relaxed_accuracy("45%", ["45%"]) == 1.0
    assert relaxed_accuracy("45", ["45%"]) == 0.0
    assert relaxed_accuracy("45%", ["45"]) == 0.0


def test_relaxed_accuracy_on_text_is_case_insensitive_equality_of_stripped_prediction():
    assert relaxed_accuracy(" yes \n", ["Yes"]) == 1.0
    assert relaxed_accuracy("yes.", ["Yes"]) == 0.0


def test_relaxed_accuracy_zero_target_needs_the_same_string():
    assert relaxed_accuracy("0", ["0"]) == 1.0
    assert relaxed_accuracy("0.0", ["0"]) == 0.0


def test_relaxed_accuracy_number_with_thousands_comma_is_text():
    assert relaxed_accuracy("1,000", ["1000"]) == 0.0


# --- OCRBench: image_vqa.OCRBench.evaluate


def test_ocrbench_answer_must_be_substring_case_insensitive():
    assert ocrbench_hit("The text says: hello world.", ["Hello World"], "Regular Text Recognition") == 1.0
    assert ocrbench_hit("helloworld", ["hello world"], "Regular Text Recognition") == 0.0


def test_ocrbench_newline_reads_as_space_outside_hme():
    assert ocrbench_hit("hello\nworld", ["hello world"], "Scene Text-centric VQA") == 1.0


def test_ocrbench_any_answer_counts():
    assert ocrbench_hit("it is 42", ["forty two", "42"], "Doc-oriented VQA") == 1.0


def test_ocrbench_hme_drops_spaces_and_keeps_case():
    assert ocrbench_hit("$\\frac{a}{b}$", ["\\frac { a } { b }"], HME) == 1.0
    assert ocrbench_hit("x^2", ["X^2"], HME) == 0.0
    assert ocrbench_hit("x^2", ["X^2"], "Digit String Recognition") == 1.0


def test_ocrbench_unknown_category_is_an_error():
    with pytest.raises(DdpEvalError, match="unknown category"):
        ocrbench_hit("a", ["a"], "Text Recognition")


def test_ocrbench_groups_sum_to_final_score():
    categories = ["Regular Text Recognition", "Artistic Text Recognition", "Scene Text-centric VQA",
                  "Doc-oriented VQA", "Key Information Extraction", HME, HME]
    hits = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert ocrbench_metrics(hits, categories) == {
        "Text Recognition": 2,
        "Scene Text-centric VQA": 0,
        "Doc-oriented VQA": 1,
        "Key Information Extraction": 1,
        HME: 1,
        "Final Score": 5,
        "Final Score Norm": 0.5,
    }


def test_ocrbench_all_right_on_1000_rows_is_1000():
    result = benchmark_metrics("OCRBench", [1.0] * 1000, categories=["Doc-oriented VQA"] * 1000)
    assert result["Final Score"] == 1000 and result["Final Score Norm"] == 100.0


# --- aggregation: image_vqa.ImageVQADataset.evaluate_heuristic


def test_split_column_gives_per_split_then_overall_in_percent():
    splits = ["test_human", "test_human", "test_augmented", "test_augmented"]
    result = vqa_metrics([1.0, 0.0, 1.0, 1.0], splits=splits)
    assert result == {"test_human": 50.0, "test_augmented": 100.0, "Overall": 75.0}
    assert list(result)[-1] == "Overall"


def test_without_split_categories_follow_overall_sorted_and_split_wins_over_category():
    assert vqa_metrics([1.0, 0.0, 0.5], categories=["b", "a", "b"]) == {"Overall": 50.0, "a": 0.0, "b": 75.0}
    assert vqa_metrics([1.0, 0.0], splits=["val", "val"], categories=["a", "b"]) == {"val": 50.0, "Overall": 50.0}


def test_textvqa_end_to_end_from_cells():
    rows = [("Dakota", str(["dakota"] * 10)), ("nokia", str(["nokia"] + ["toshiba"] * 9))]
    hits = [row_hit("TextVQA_VAL", pred, cell) for pred, cell in rows]
    assert math.isclose(benchmark_metrics("TextVQA_VAL", hits)["Overall"], (1.0 + 0.3) / 2 * 100)


def test_row_hit_reads_a_missing_prediction_as_nan_text():
    # evaluate_heuristic and OCRBench.evaluate both take str(prediction)
    assert row_hit("OCRBench", float("nan"), "['NaN']", "Regular Text Recognition") == 1.0
    assert row_hit("ChartQA_TEST", float("nan"), "12") == 0.0  # float('nan') is never within 5 %


def test_unknown_dataset_is_an_error():
    with pytest.raises(DdpEvalError, match="MMBench"):
        row_hit("MMBench", "a", "a")


def test_headline_metrics():
    assert HEADLINE_METRIC == {"TextVQA_VAL": "Overall", "DocVQA_VAL": "Overall", "ChartQA_TEST": "Overall",
                               "OCRBench": "Final Score"}


# --- prompts: ImageVQADataset.build_prompt, ImageBaseDataset.build_prompt (Qwen2-VL's: test_qwen2_vl_prompt.py)


def test_dataset_prompt_appends_short_answer_instruction_except_ocrbench():
    assert dataset_prompt("what is written?", "TextVQA_VAL") == (
        "what is written?\nAnswer the question using a single word or phrase.")
    assert dataset_prompt("what is written?", "ChartQA_TEST").endswith("single word or phrase.")
    assert dataset_prompt("what is written?", "OCRBench") == "what is written?"
