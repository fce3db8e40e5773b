from ddp_eval.models.qwen2_vl.prompt import custom_content, mcq_prompt
from ddp_eval.tasks.mcq.rows import McqSample


def sample(**kw):
    base = dict(index=0, question="What is shown?", hint=None, options={"A": "cat", "B": "dog"}, answer="A",
                category=None, l2_category=None, image_keys=(0,))
    base.update(kw)
    return McqSample(**base)


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
    content = custom_content("mcq", sample())
    assert [c["type"] for c in content] == ["image", "text"]
