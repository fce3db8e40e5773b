"""Qwen2-VL's own prompts (VLMEvalKit's Qwen2VLPromptMixin, e8e78f05) and where it uses them."""

import pytest

from ddp_eval.models.qwen2_vl.prompt import custom_content, mcq_prompt, mmmu_prompt, uses_custom_prompt
from ddp_eval.tasks.mcq.rows import McqSample
from ddp_eval.tasks.questions import QuestionSample


def sample(**kw):
    base = dict(index=0, question="What is shown?", hint=None, options={"A": "cat", "B": "dog"}, answer="A",
                category=None, l2_category=None, image_keys=(0,))
    base.update(kw)
    return McqSample(**base)


def question(text="Is there a dog?"):
    return QuestionSample(index=0, image_keys=(3,), question=text, answer="Yes")


def test_prompt_without_hint_is_vlmevalkit_exact():
    assert mcq_prompt(sample()) == (
        "Question: What is shown?\nOptions:\nA. cat\nB. dog\n"
        "Please select the correct answer from the options above."
    )


def test_hint_line_only_when_present():
    text = mcq_prompt(sample(hint="It barks."))
    assert text.startswith("Hint: It barks.\nQuestion: What is shown?\n")


def test_chinese_text_gets_chinese_instruction():
    text = mcq_prompt(sample(question="图中是什么？", options={"A": "猫", "B": "狗"}))
    assert text.endswith("B. 狗\n请直接回答选项字母。")


def test_whole_prompt_is_stripped():
    text = mcq_prompt(sample(question="  Q?  ", options={}))
    assert text == "Question:   Q?"


def test_image_comes_before_text():
    content = custom_content("mcq", sample(), "MMBench_DEV_EN")
    assert [c["type"] for c in content] == ["image", "text"]


def test_mmmu_prompt_keeps_image_tags_puts_all_images_first_and_has_no_chinese_switch():
    row = sample(question="图 <image 2> vs <image 1>?", options={"A": "<image 1>", "B": "no"},
                 image_keys=((7, 0), (7, 1)))
    content = custom_content("mcq", row, "MMMU_DEV_VAL")
    assert [c.get("image") for c in content] == [(7, 0), (7, 1), None]
    assert content[-1]["text"] == mmmu_prompt(row) == (
        "Question: 图 <image 2> vs <image 1>?\nOptions:\nA. <image 1>\nB. no\n"
        "Please select the correct answer from the options above.")


@pytest.mark.parametrize("dataset", ["POPE", "HallusionBench"])
def test_yes_no_custom_prompt_appends_the_yes_no_sentence(dataset):
    assert custom_content("yorn", question(), dataset)[-1]["text"] == "Is there a dog? Please answer yes or no."


def test_mme_and_unknown_yes_no_sets_keep_the_dataset_prompt():
    assert custom_content("yorn", question(), "MME") is None
    assert custom_content("yorn", question(), None) is None


@pytest.mark.parametrize("dataset", ["TextVQA_VAL", "DocVQA_VAL", "ChartQA_TEST", "OCRBench"])
def test_short_answer_custom_prompt_for_all_four(dataset):
    assert custom_content("vqa", question("Q?"), dataset)[-1]["text"] == (
        "Q?\nPlease try to answer the question with short words or phrases if possible.")


def test_use_custom_prompt_follows_vlmevalkit():
    assert uses_custom_prompt("mcq", "MMStar") and not uses_custom_prompt("mcq", "LEGO_sort")
    assert not uses_custom_prompt("vqa", "MMVet") and not uses_custom_prompt("vqa", "ChartQAPro_CoT")
    assert not uses_custom_prompt("mcq", None)  # a custom file: VLMEvalKit knows no type for it
    assert uses_custom_prompt("mcq", "MMMU_DEV_VAL") and uses_custom_prompt("vqa", "MMMU_TEST")
