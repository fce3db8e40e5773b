"""The text of a yes/no benchmark's own prompt, as VLMEvalKit's `ImageYORNDataset.build_prompt` builds it
(images go first, as separate items): the TSV question unchanged (MME's questions already end in
"Please answer yes or no."); AMBER alone appends a yes/no line. Model families with a prompt of their
own (`models/<family>/prompt.py`, for POPE and HallusionBench) build it instead.
"""

from __future__ import annotations

AMBER_SUFFIX = "\nPlease answer yes or no."


def dataset_prompt(question: str, dataset: str) -> str:
    """ImageYORNDataset's text: the TSV question unchanged; AMBER alone gets a yes/no line appended."""
    return question + AMBER_SUFFIX if dataset == "AMBER" else question
