"""Row -> prompt text, exactly VLMEvalKit's Qwen2-VL multiple-choice prompt (pure, no I/O).

Hint line only when there is a hint; options in letter order; the English instruction, or the
Chinese one when the text so far has CJK characters; the whole stripped. Image first, text after.
"""

from __future__ import annotations

import re
from typing import Any

from ddp_eval.data.rows import Sample

MCQ_EN_PROMPT = "Please select the correct answer from the options above."
MCQ_CN_PROMPT = "请直接回答选项字母。"
_CJK = re.compile("[\u4e00-\u9fff]")


def has_chinese(text: str) -> bool:
    return _CJK.search(text) is not None


def build_prompt(sample: Sample) -> str:
    prompt = ""
    if sample.hint is not None:
        prompt += f"Hint: {sample.hint}\n"
    prompt += f"Question: {sample.question}\n"
    if sample.options:
        prompt += "Options:\n"
        for letter, text in sample.options.items():
            prompt += f"{letter}. {text}\n"
        prompt += MCQ_CN_PROMPT if has_chinese(prompt) else MCQ_EN_PROMPT
    return prompt.rstrip()


def build_messages(sample: Sample) -> list[dict[str, Any]]:
    """One user turn in the chat-template format: the image placeholder, then the prompt text."""
    return [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": build_prompt(sample)}],
        }
    ]
