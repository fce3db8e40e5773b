"""The multiple-choice prompt VLMEvalKit's ImageMCQDataset builds (its `build_prompt`); pure.

Images first, then one text: an optional `Hint:` line, the question, the options one per line and
the instruction. Model families with a prompt of their own for these rows build it instead
(e.g. `models.qwen2_vl.prompt`).
"""

from __future__ import annotations

from ddp_eval.tasks.mcq.rows import McqSample

INSTRUCTION = "Please select the correct answer from the options above. \n"


def question_and_options(sample: McqSample) -> str:
    """`Hint:` line (only with a hint), `Question:` line, then `Options:` and one line per option (if any)."""
    text = f"Hint: {sample.hint}\n" if sample.hint is not None else ""
    text += f"Question: {sample.question}\n"
    if sample.options:
        text += "Options:\n" + "".join(f"{letter}. {option}\n" for letter, option in sample.options.items())
    return text


def default_prompt(sample: McqSample) -> str:
    text = question_and_options(sample)
    return text + INSTRUCTION if sample.options else text
