"""Planned batch -> inputs of any image-text-to-text checkpoint, the way its processor builds them itself.

One conversation per row (one user turn: the prompt's images and text in order), the processor's own
chat template, its own image handling (no resizing here) and left padding: the processor's
`apply_chat_template` on the whole batch, as transformers' own batched `generate` examples do. A
row whose image cannot be decoded, or that the processor refuses alone, is set aside with the reason.

Runs inside DataLoader workers so that decoding and preprocessing overlap generation.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ddp_eval.core.batch import PreparedBatch
from ddp_eval.core.sample import Benchmark
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.common.row_images import rows_with_images
from ddp_eval.tasks.base import Content


def conversation(content: Content, images: dict[Hashable, Any] | None = None) -> list[dict[str, Any]]:
    """One user turn in the chat-template format; with `images`, each image item carries its picture."""
    items = [({"type": "image", "image": images[item["image"]]} if images is not None else {"type": "image"})
             if item["type"] == "image" else {"type": "text", "text": item["text"]} for item in content]
    return [{"role": "user", "content": items}]


def chat_text(processor, content: Content) -> str:
    """The prompt as the model reads it: the processor's chat template, one placeholder per image."""
    return processor.apply_chat_template(conversation(content), tokenize=False, add_generation_prompt=True)


def model_inputs(processor, conversations: list[list[dict[str, Any]]]):
    """The processor's inputs for these conversations: tokenized, images processed, left-padded."""
    return processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt", processor_kwargs={"padding": True})


def open_image(benchmark: Benchmark, key: Hashable):
    image = benchmark.images.open(key)
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass
class Preprocess:
    """Item maker for the DataLoader workers: (batch id, row indices) -> PreparedBatch."""

    processor: Any
    benchmark: Benchmark
    content: Callable[[Any], Content]  # sample -> prompt content
    choices: Callable[[Any], tuple[str, ...]]

    def __call__(self, batch_id: int, indices: tuple[int, ...]) -> PreparedBatch:
        benchmark = self.benchmark
        runnable, images, failed = rows_with_images(benchmark, indices, self.content, open_image)
        # row index -> its conversation
        rows: dict[int, list[dict[str, Any]]] = {index: conversation(content, images)
                                                  for index, content, _ in runnable}
        inputs = None
        if rows:
            inputs = self._inputs(rows, failed)
        ok = tuple(i for i in rows if i not in failed)
        return PreparedBatch(batch_id=batch_id, indices=ok, inputs=inputs if ok else None, failed=failed,
                             choices=[self.choices(benchmark.by_index[i]) for i in ok])

    def _inputs(self, rows: dict[int, list[dict[str, Any]]], failed: dict[int, str]):
        """The batch's inputs; where the processor refuses the batch, each row alone finds the ones it refuses."""
        try:
            return model_inputs(self.processor, list(rows.values()))
        except (ValueError, TypeError, RuntimeError) as err:
            if len(rows) == 1:
                index = next(iter(rows))
                failed[index] = f"row index {index}: the processor refuses it ({type(err).__name__}: {err})"
                return None
        for index, row in rows.items():
            try:
                model_inputs(self.processor, [row])
            except (ValueError, TypeError, RuntimeError) as err:
                failed[index] = f"row index {index}: the processor refuses it ({type(err).__name__}: {err})"
        left = {i: row for i, row in rows.items() if i not in failed}
        if len(left) == len(rows):
            raise DdpEvalError(f"the processor refuses a batch of rows {list(rows)[:5]} that it takes one by one")
        return self._inputs(left, failed) if left else None
