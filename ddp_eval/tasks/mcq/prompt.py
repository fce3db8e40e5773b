"""The multiple-choice prompt VLMEvalKit's ImageMCQDataset builds (its `build_prompt`); pure.

Images first, then one text: an optional `Hint:` line, the question, the options one per line and
the instruction. MMMU (`MMMUDataset.build_prompt`) then moves each image to where the text names it
(`<image 2>`). Model families with a prompt of their own for these rows build it instead (e.g.
`models/<family>/prompt.py`).
"""

from __future__ import annotations

from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.base import Content, image_item, prompt_text, text_item
from ddp_eval.tasks.mcq.rows import McqSample

INSTRUCTION = "Please select the correct answer from the options above. \n"
IMAGE_TAG = "<image "  # MMMU's text names its images <image 1>, <image 2>, ...


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


def split_mmmu(content: Content, where: str) -> Content:
    """VLMEvalKit's `MMMUDataset.split_MMMU`: the text cut at each `<image N>` (one digit), the N-th image
    put there. Images the text does not name are left out, one named twice shows twice; a text naming
    none keeps the images first. N = 0 names the last image, as Python's images[-1] does there."""
    images = [item["image"] for item in content if item["type"] == "image"]
    segments = prompt_text(content).split(IMAGE_TAG)
    if len(segments) == 1:
        return content
    out = [text_item(segments[0])]
    for segment in segments[1:]:
        if len(segment) < 2 or segment[0] not in "0123456789" or segment[1] != ">":
            raise DdpEvalError(f"{where}: the text has {IMAGE_TAG + segment[:3]!r}, not <image N> with one digit N, "
                               "which MMMU's prompt needs to place the images")
        number = int(segment[0])
        if number > len(images) or not images:
            raise DdpEvalError(f"{where}: the text names <image {number}> but the row has {len(images)} image(s)")
        out += [image_item(images[number - 1]), text_item(segment[2:])]
    return out
