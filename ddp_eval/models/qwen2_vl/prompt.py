"""The prompts VLMEvalKit's Qwen2-VL wrapper builds itself (Qwen2VLPromptMixin), where it does (pure).

Multiple choice: a `Hint:` line only when there is a hint, `Question:`, the options in letter order,
then the English instruction, or the Chinese one when the text so far has CJK characters; the whole
stripped. Images first, text after. Other tasks keep the benchmark's own prompt.
"""

from __future__ import annotations

import re

from ddp_eval.tasks.base import Content, image_item, text_item
from ddp_eval.tasks.mcq.prompt import question_and_options
from ddp_eval.tasks.mcq.rows import McqSample

MCQ_EN_PROMPT = "Please select the correct answer from the options above."
MCQ_CN_PROMPT = "请直接回答选项字母。"
_CJK = re.compile("[\u4e00-\u9fff]")


def has_chinese(text: str) -> bool:
    return _CJK.search(text) is not None


def mcq_prompt(sample: McqSample) -> str:
    prompt = question_and_options(sample)
    if sample.options:
        prompt += MCQ_CN_PROMPT if has_chinese(prompt) else MCQ_EN_PROMPT
    return prompt.rstrip()


def custom_content(prompt_kind: str, sample) -> Content | None:
    """Qwen2-VL's own prompt for a row of this kind of task, or None where it uses the benchmark's."""
    if prompt_kind == "mcq":
        return [*(image_item(k) for k in sample.image_keys), text_item(mcq_prompt(sample))]
    return None
