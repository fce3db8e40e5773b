"""Planned batch -> model inputs on the CPU: decode images, resize (qwen_vl_utils), chat template, processor.

Runs inside DataLoader workers so that decoding and preprocessing overlap generation. A row whose
image cannot be used (missing, not base64, undecodable, 0 pixels, absurd aspect ratio) is set aside
with the reason; the rest of the batch goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from ddp_eval.data.rows import Benchmark, Sample
from ddp_eval.errors import DdpEvalError
from ddp_eval.plan import PlannedBatch
from ddp_eval.prompts import build_messages


@dataclass
class PreparedBatch:
    batch_id: int
    indices: tuple[int, ...]  # rows in `inputs`, in order
    inputs: Any  # transformers BatchFeature with CPU tensors, or None when every row failed
    failed: dict[int, str] = field(default_factory=dict)  # row index -> why it has no input

    def pin_memory(self) -> PreparedBatch:
        """Called by the DataLoader's pinning thread, so host-to-device copies can be asynchronous."""
        if self.inputs is not None:
            for name, value in self.inputs.items():
                if hasattr(value, "pin_memory"):
                    self.inputs[name] = value.pin_memory()
        return self


def resized_image(benchmark: Benchmark, sample: Sample, min_pixels: int, max_pixels: int):
    from qwen_vl_utils import fetch_image

    image = benchmark.images.open(sample.image_key)
    try:
        return fetch_image({"image": image, "min_pixels": min_pixels, "max_pixels": max_pixels})
    except ValueError as err:  # e.g. aspect ratio beyond what the processor accepts
        raise DdpEvalError(f"{benchmark.images.describe(sample.image_key)}: {err}") from None


def prepare_batch(processor, benchmark: Benchmark, batch_id: int, indices: tuple[int, ...], min_pixels: int,
                  max_pixels: int) -> PreparedBatch:
    texts, images, ok, failed = [], [], [], {}
    for index in indices:
        sample = benchmark.by_index[index]
        try:
            images.append(resized_image(benchmark, sample, min_pixels, max_pixels))
        except DdpEvalError as err:
            failed[index] = str(err)
            continue
        ok.append(index)
        texts.append(processor.apply_chat_template(build_messages(sample), tokenize=False,
                                                   add_generation_prompt=True))
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt") if ok else None
    return PreparedBatch(batch_id=batch_id, indices=tuple(ok), inputs=inputs, failed=failed)


class BatchDataset(Dataset):
    """Item i is the i-th planned batch of this rank, fully preprocessed."""

    def __init__(self, processor, benchmark: Benchmark, batches: list[PlannedBatch], min_pixels: int,
                 max_pixels: int) -> None:
        self.processor = processor
        self.benchmark = benchmark
        self.batches = batches
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.batches)

    def prepare(self, batch_id: int, indices: tuple[int, ...]) -> PreparedBatch:
        return prepare_batch(self.processor, self.benchmark, batch_id, indices, self.min_pixels, self.max_pixels)

    def __getitem__(self, i: int) -> PreparedBatch:
        batch = self.batches[i]
        return self.prepare(batch.batch_id, batch.indices)
