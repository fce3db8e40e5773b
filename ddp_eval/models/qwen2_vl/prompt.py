"""The prompts VLMEvalKit's Qwen2-VL wrapper builds itself (`Qwen2VLPromptMixin`), where it does (pure).

`use_custom_prompt` (VLMEvalKit e8e78f05) is true for MMMU_DEV_VAL / MMMU_TEST, every multiple-choice
dataset but LEGO's, the yes/no sets HallusionBench and POPE (MME has its own prompt), and every
short-answer set but MMVet, ChartQAPro* and ChartMuseum; only for datasets VLMEvalKit knows (a custom
file gets the dataset's prompt). Qwen2.5-VL's configs set use_custom_prompt=False: that family
always gets the dataset's prompt.

- multiple choice: a `Hint:` line only when there is a hint, `Question:`, the options in letter order,
  then the English instruction, or the Chinese one when the text so far has CJK characters; stripped;
- MMMU: the same without the Chinese test, all images first, `<image N>` left in the text;
- yes/no: the question + " Please answer yes or no.";
- short answer: the question + "\\nPlease try to answer the question with short words or phrases if possible.".

Images first, text after, in every case.
"""

from __future__ import annotations

import re

from ddp_eval.tasks.base import Content, images_then_text
from ddp_eval.tasks.mcq.prompt import INSTRUCTION, question_and_options
from ddp_eval.tasks.mcq.rows import McqSample

MCQ_EN_PROMPT = "Please select the correct answer from the options above."
MCQ_CN_PROMPT = "请直接回答选项字母。"
YORN_SUFFIX = " Please answer yes or no."
VQA_SUFFIX = "\nPlease try to answer the question with short words or phrases if possible."
MMMU_DATASETS = frozenset({"MMMU_DEV_VAL", "MMMU_TEST"})
YORN_CUSTOM = frozenset({"HallusionBench", "POPE"})
VQA_WITHOUT_CUSTOM = frozenset({"MMVet", "ChartQAPro", "ChartQAPro_CoT", "ChartQAPro_PoT", "ChartMuseum"})
_CJK = re.compile("[\u4e00-\u9fff]")


def has_chinese(text: str) -> bool:
    return _CJK.search(text) is not None


def mcq_prompt(sample: McqSample) -> str:
    prompt = question_and_options(sample)
    if sample.options:
        prompt += MCQ_CN_PROMPT if has_chinese(prompt) else MCQ_EN_PROMPT
    return prompt.rstrip()


def mmmu_prompt(sample: McqSample) -> str:
    prompt = question_and_options(sample)
    if sample.options:
        prompt += INSTRUCTION
    return prompt.rstrip()


def uses_custom_prompt(prompt_kind: str, dataset: str | None) -> bool:
    """`Qwen2VLPromptMixin.use_custom_prompt`; `dataset`: the benchmark VLMEvalKit knows it as (None: a
    custom file)."""
    if dataset in MMMU_DATASETS:
        return True
    if dataset is None:
        return False
    if prompt_kind == "mcq":
        return "LEGO" not in dataset
    if prompt_kind == "yorn":
        return dataset in YORN_CUSTOM
    if prompt_kind == "vqa":
        return dataset not in VQA_WITHOUT_CUSTOM
    return False


def custom_content(prompt_kind: str, sample, dataset: str | None) -> Content | None:
    """Qwen2-VL's own prompt for a row, or None where it uses the benchmark's."""
    if not uses_custom_prompt(prompt_kind, dataset):
        return None
    if dataset in MMMU_DATASETS:
        return images_then_text(sample, mmmu_prompt(sample))
    if prompt_kind == "mcq":
        return images_then_text(sample, mcq_prompt(sample))
    if prompt_kind == "yorn":
        return images_then_text(sample, sample.question + YORN_SUFFIX)
    return images_then_text(sample, sample.question + VQA_SUFFIX)
