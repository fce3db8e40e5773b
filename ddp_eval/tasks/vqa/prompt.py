"""The question text VLMEvalKit's dataset classes send for TextVQA_VAL, DocVQA_VAL, ChartQA_TEST and
OCRBench (pure; only the text item: VLMEvalKit puts each image first as its own item, then this text).

ImageVQADataset.build_prompt appends the short-answer instruction; OCRBench keeps ImageBaseDataset's
prompt, the question alone. Model families with a prompt of their own (`models/<family>/prompt.py`)
build it instead.
"""

from __future__ import annotations

from ddp_eval.errors import DdpEvalError

# ImageVQADataset.build_prompt appends this to the question.
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."

IMAGE_VQA_DATASETS = frozenset({"TextVQA_VAL", "DocVQA_VAL", "ChartQA_TEST"})  # class ImageVQADataset
QUESTION_ONLY_DATASETS = frozenset({"OCRBench"})  # class OCRBench keeps ImageBaseDataset.build_prompt
VQA_DATASETS = IMAGE_VQA_DATASETS | QUESTION_ONLY_DATASETS


def dataset_prompt(question: str, dataset: str) -> str:
    """The benchmark's default text: the question plus the short-answer instruction, or for OCRBench
    the question alone."""
    if dataset not in VQA_DATASETS:
        raise DdpEvalError(f"no VQA prompt rule for dataset {dataset!r}; known: {sorted(VQA_DATASETS)}")
    if dataset in QUESTION_ONLY_DATASETS:
        return question
    return question + SHORT_ANSWER_SUFFIX
