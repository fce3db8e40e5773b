"""Yes/no benchmarks: extraction, MME / POPE / HallusionBench metrics and prompt text.

Every expected value was worked out by hand from VLMEvalKit's code: `vlmeval/smp/misc.py`
(process_punctuation), `vlmeval/dataset/utils/yorn.py` (YOrN_Extraction, MME_rating, POPE_rating,
Hallusion_rating), `vlmeval/dataset/image_yorn.py` (ImageYORNDataset.evaluate / build_prompt) and
(Qwen2-VL's own yes/no prompt: tests/test_qwen2_vl_prompt.py).
"""

from __future__ import annotations

import math

import pytest

from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.yorn.prompt import dataset_prompt
from ddp_eval.tasks.yorn.scoring import (
    MME_PERCEPTION,
    MME_REASONING,
    YornRow,
    extract_yes_no,
    hallusion_metrics,
    headline,
    metrics_for,
    mme_metrics,
    pope_metrics,
    row_hit,
)

# ---- extraction (YOrN_Extraction over process_punctuation) ----


@pytest.mark.parametrize("reply", ["Yes", "YES.", "yEs", "Yes, it is.", "Yes!", "(yes)", "\nYes\n", "3.5 yes"])
def test_reply_with_only_yes_is_yes(reply):
    assert extract_yes_no(reply) == "Yes"


@pytest.mark.parametrize("reply", ["no", "No, there is no dog.", "NO!", "no-brainer"])
def test_reply_with_only_no_is_no(reply):
    assert extract_yes_no(reply) == "No"


@pytest.mark.parametrize("reply", ["Yes and no", "yes/no", "No. Yes.", "yes-no"])
def test_reply_with_both_yes_and_no_is_unknown(reply):
    assert extract_yes_no(reply) == "Unknown"


@pytest.mark.parametrize("reply", ["", "Nope", "Not sure", "maybe"])
def test_reply_with_neither_word_is_unknown(reply):
    assert extract_yes_no(reply) == "Unknown"


@pytest.mark.parametrize("reply", [None, float("nan")])
def test_missing_reply_is_unknown(reply):
    # evaluate() applies str() first: "None" / "nan" hold neither word.
    assert extract_yes_no(reply) == "Unknown"


@pytest.mark.parametrize("reply", ["Yes:", "**Yes**", "'yes'", "Answer:yes"])
def test_marks_outside_vlmevalkits_list_stay_glued_to_the_word(reply):
    # ':', '*' and "'" are not in process_punctuation's list, so the token is not exactly "yes".
    assert extract_yes_no(reply) == "Unknown"


def test_mark_next_to_a_space_is_deleted_everywhere_which_can_join_words():
    # '-' touches no space: it becomes a space, so "no" appears as a word.
    assert extract_yes_no("Yes, there is a no-entry sign") == "Unknown"
    # ' -' occurs somewhere, so every '-' is deleted: "noentry".
    assert extract_yes_no("Yes, there is a no-entry sign - clearly.") == "Yes"


def test_digit_comma_digit_deletes_every_mark():
    assert extract_yes_no("Yes, 1 no-entry sign") == "Unknown"
    # "1,000" matches commaStrip, so '-' is deleted too and "no-entry" becomes "noentry".
    assert extract_yes_no("Yes, 1,000 no-entry signs") == "Yes"


def test_period_between_letters_is_deleted_and_joins_words():
    assert extract_yes_no("yes.no") == "Unknown"  # "yesno"
    assert extract_yes_no("It is yes.") == "Yes"


def test_only_the_first_32_lone_periods_are_deleted():
    # periodStrip.sub('', text, re.UNICODE) passes 32 as sub()'s count.
    assert extract_yes_no("." * 31 + " yes.") == "Yes"
    assert extract_yes_no("." * 32 + " yes.") == "Unknown"  # the 33rd period stays: "yes."


# ---- per-row hit (evaluate: score = answer == extracted) ----


def test_row_hit_is_exact_string_equality_and_unknown_never_hits():
    assert row_hit(YornRow(index=0, answer="Yes", extracted="Yes")) == 1.0
    assert row_hit(YornRow(index=0, answer="No", extracted="Unknown")) == 0.0
    assert row_hit(YornRow(index=0, answer="yes", extracted="Yes")) == 0.0


def test_row_from_record_extracts_from_prediction_and_drops_nan_fields():
    row = YornRow.from_record({"index": 7, "answer": "No", "prediction": "No.", "category": float("nan")})
    assert row == YornRow(index=7, answer="No", extracted="No", category=None)


# ---- MME (MME_rating) ----


def mme_pair(category, image, first_right=True, second_right=True, answer="Yes"):
    wrong = "No" if answer == "Yes" else "Yes"
    return [
        YornRow(index=f"{image}a", answer=answer, extracted=answer if first_right else wrong,
                category=category, image_path=image),
        YornRow(index=f"{image}b", answer=answer, extracted=answer if second_right else wrong,
                category=category, image_path=image),
    ]


def all_mme_categories_right(skip=()):
    rows = []
    for category in MME_PERCEPTION + MME_REASONING:
        if category not in skip:
            rows += mme_pair(category, f"{category}/1.jpg")
    return rows


def test_mme_acc_plus_pairs_questions_by_image_path_not_by_position():
    a1, a2 = mme_pair("color", "color/a.jpg", second_right=False)
    b1, b2 = mme_pair("color", "color/b.jpg")
    rows = all_mme_categories_right(skip={"color"}) + [a1, b1, a2, b2]
    color = mme_metrics(rows)["category"]["color"]
    # acc: 3 of 4 questions; acc+: image b only of a, b.
    assert color == {"acc": 75.0, "acc+": 50.0, "score": 125.0}


def test_mme_perception_and_reasoning_sum_the_category_scores():
    rows = all_mme_categories_right(skip={"color", "code_reasoning"})
    rows += mme_pair("color", "color/a.jpg", second_right=False) + mme_pair("color", "color/b.jpg")
    # Unknown on a "No" question is wrong: code_reasoning scores 0 + 0.
    rows += [YornRow(index=i, answer="No", extracted="Unknown", category="code_reasoning", image_path="c.png")
             for i in ("c1", "c2")]
    metrics = mme_metrics(rows)
    assert metrics["perception"] == 9 * 200 + 125.0
    assert metrics["reasoning"] == 3 * 200 + 0.0
    assert headline("MME", metrics) == ("perception+reasoning", 2525.0)


def test_mme_acc_plus_uses_the_first_two_questions_of_an_image():
    rows = all_mme_categories_right(skip={"scene"}) + mme_pair("scene", "s.jpg")
    rows.append(YornRow(index="s3", answer="Yes", extracted="No", category="scene", image_path="s.jpg"))
    scene = mme_metrics(rows)["category"]["scene"]
    assert scene["acc"] == pytest.approx(200 / 3)
    assert scene["acc+"] == 100.0


def test_mme_image_with_one_question_is_an_error():
    rows = all_mme_categories_right(skip={"OCR"}) + mme_pair("OCR", "o.jpg")[:1]
    with pytest.raises(DdpEvalError, match="o.jpg"):
        mme_metrics(rows)


def test_mme_missing_category_is_an_error():
    with pytest.raises(DdpEvalError, match="text_translation"):
        mme_metrics(all_mme_categories_right(skip={"text_translation"}))


# ---- POPE (POPE_rating) ----


def pope_row(answer, extracted, category):
    return YornRow(index=0, answer=answer, extracted=extracted, category=category)


POPE_ROWS = [
    pope_row("Yes", "Yes", "adversarial,popular"),  # TP in both splits
    pope_row("No", "Unknown", "adversarial"),  # TN for F1 (Unknown counts as No), wrong for acc
    pope_row("Yes", "Unknown", "popular"),  # FN
    pope_row("No", "Yes", "random"),  # FP
    pope_row("Yes", "No", "random"),  # FN
    pope_row("No", "No", "random,popular"),  # TN in both splits
]


def test_pope_splits_rows_by_comma_separated_category():
    metrics = pope_metrics(POPE_ROWS)
    assert list(metrics) == ["Overall", "adversarial", "popular", "random"]
    assert metrics["adversarial"] == {"Overall": 100.0, "acc": 50.0, "precision": 100.0, "recall": 100.0}
    # popular: TP, FN, TN -> precision 1, recall 1/2, F1 2/3.
    assert metrics["popular"]["Overall"] == pytest.approx(200 / 3)
    assert metrics["popular"]["acc"] == pytest.approx(200 / 3)
    assert (metrics["popular"]["precision"], metrics["popular"]["recall"]) == (100.0, 50.0)
    # random: FP, FN, TN -> no true positive, precision = recall = F1 = 0.
    assert metrics["random"]["Overall"] == 0.0
    assert metrics["random"]["acc"] == pytest.approx(100 / 3)


def test_pope_overall_counts_a_multi_split_row_once_per_split():
    overall = pope_metrics(POPE_ROWS)["Overall"]
    # 8 exploded rows: TP x2, TN x3 (one Unknown), FN x2, FP x1.
    assert overall["precision"] == pytest.approx(200 / 3)
    assert overall["recall"] == 50.0
    assert overall["Overall"] == pytest.approx(400 / 7)  # F1 = 2PR/(P+R) = 4/7
    assert overall["acc"] == 50.0  # 4 of 8, not 2 of 6
    assert headline("POPE", pope_metrics(POPE_ROWS)) == ("Overall F1", pytest.approx(400 / 7))


def test_pope_unknown_on_a_no_question_is_a_true_negative_but_not_a_hit():
    only = pope_metrics([pope_row("No", "Unknown", "random")])["random"]
    assert only == {"Overall": 0.0, "acc": 0.0, "precision": 0.0, "recall": 0.0}
    right = pope_metrics([pope_row("No", "No", "random")])["random"]
    assert right == {"Overall": 0.0, "acc": 100.0, "precision": 0.0, "recall": 0.0}


def test_pope_row_without_category_counts_in_overall_only():
    metrics = pope_metrics([pope_row("Yes", "Yes", "random"), pope_row("Yes", "No", None)])
    assert list(metrics) == ["Overall", "random"]
    assert metrics["Overall"]["acc"] == 50.0
    assert metrics["random"]["acc"] == 100.0


# ---- HallusionBench (Hallusion_rating) ----


def hallu_row(index, right):
    category, l2 = index.split("_")[:2]
    return YornRow(index=index, answer="Yes", extracted="Yes" if right else "No", category=category, l2_category=l2)


HALLU_ROWS = [
    hallu_row("VD_chart_1_0_0_0", True),  # set 0, figure 0, question 0
    hallu_row("VD_chart_1_0_0_1", False),  # set 0, figure 0, question 1
    hallu_row("VD_chart_1_0_1_0", True),  # set 0, figure 1, question 0
    hallu_row("VD_chart_1_0_1_1", True),  # set 0, figure 1, question 1
    hallu_row("VS_map_2_3_0_0", True),  # set 3, figure 0, question 0
    hallu_row("VS_map_2_3_1_0", False),  # set 3, figure 1, question 0
]


def test_hallusion_groups_figures_and_questions_from_the_string_index():
    metrics = hallusion_metrics(HALLU_ROWS)
    assert list(metrics) == ["Overall", "VD", "VS", "chart", "map"]
    overall = metrics["Overall"]
    assert overall["aAcc"] == pytest.approx(400 / 6)
    # figures: chart/0/0 no, chart/0/1 yes, map/3/0 yes, map/3/1 no.
    assert overall["fAcc"] == 50.0
    # questions: chart/0/0 yes, chart/0/1 no, map/3/0 no.
    assert overall["qAcc"] == pytest.approx(100 / 3)
    assert metrics["VD"] == metrics["chart"] == {"aAcc": 75.0, "fAcc": 50.0, "qAcc": 50.0}
    assert metrics["VS"] == metrics["map"] == {"aAcc": 50.0, "fAcc": 50.0, "qAcc": 0.0}
    assert headline("HallusionBench", metrics) == (
        "Overall mean(aAcc,fAcc,qAcc)", pytest.approx((400 / 6 + 50 + 100 / 3) / 3))


def test_hallusion_groups_ignore_the_vd_vs_category():
    # Same l2-category, set and figure: one figure group in Overall although one row is VD, one VS.
    rows = [hallu_row("VD_chart_1_5_0_0", True), hallu_row("VS_chart_2_5_0_1", False)]
    metrics = hallusion_metrics(rows)
    assert metrics["Overall"]["fAcc"] == 0.0
    assert metrics["VD"]["fAcc"] == 100.0


def test_hallusion_index_without_six_parts_is_an_error():
    with pytest.raises(DdpEvalError, match="VD_chart_3"):
        hallusion_metrics([hallu_row("VD_chart_3", True)])


# ---- dispatch ----


def test_rating_is_picked_by_substring_of_the_dataset_name():
    assert metrics_for("POPE", POPE_ROWS) == pope_metrics(POPE_ROWS)
    assert metrics_for("HallusionBench", HALLU_ROWS) == hallusion_metrics(HALLU_ROWS)
    assert metrics_for("MME", all_mme_categories_right())["perception"] == 2000.0
    with pytest.raises(DdpEvalError):
        metrics_for("AMBER", POPE_ROWS)


def test_empty_split_mean_is_nan():
    assert math.isnan(hallusion_metrics([])["Overall"]["aAcc"])


# ---- prompts (ImageYORNDataset.build_prompt) ----


@pytest.mark.parametrize("dataset", ["MME", "POPE", "HallusionBench"])
def test_dataset_prompt_is_the_question_unchanged(dataset):
    assert dataset_prompt("Is there a dog in the image?", dataset) == "Is there a dog in the image?"


def test_amber_dataset_prompt_appends_a_yes_no_line():
    assert dataset_prompt("Is there a dog?", "AMBER") == "Is there a dog?\nPlease answer yes or no."
