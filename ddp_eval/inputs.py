"""Planned batch -> model inputs on the CPU: decode images, resize (qwen_vl_utils), chat template, processor.

Runs inside DataLoader workers so that decoding and preprocessing overlap generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from ddp_eval.data.rows import Benchmark, Sample
from ddp_eval.plan import PlannedBatch
from ddp_eval.prompts import build_messages


@dataclass
class PreparedBatch:
    batch_id: int
    indices: tuple[int, ...]
    inputs: Any  # transformers BatchFeature, CPU tensors

    def pin_memory(self) -> PreparedBatch:
        """Called by the DataLoader's pinning thread, so host-to-device copies can be asynchronous."""
        for name, value in self.inputs.items():
            if hasattr(value, "pin_memory"):
                self.inputs[name] = value.pin_memory()
        return self


def resized_image(benchmark: Benchmark, sample: Sample, min_pixels: int, max_pixels: int):
    from qwen_vl_utils import fetch_image

    image = benchmark.images.open(sample.image_key)
    return fetch_image({"image": image, "min_pixels": min_pixels, "max_pixels": max_pixels})


def prepare_batch(processor, benchmark: Benchmark, batch: PlannedBatch, min_pixels: int,
                  max_pixels: int) -> PreparedBatch:
    samples = [benchmark.by_index[i] for i in batch.indices]
    texts = [
        processor.apply_chat_template(build_messages(s), tokenize=False, add_generation_prompt=True)
        for s in samples
    ]
    images = [resized_image(benchmark, s, min_pixels, max_pixels) for s in samples]
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
    return PreparedBatch(batch_id=batch.batch_id, indices=batch.indices, inputs=inputs)


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

    def __getitem__(self, i: int) -> PreparedBatch:
        return prepare_batch(self.processor, self.benchmark, self.batches[i], self.min_pixels, self.max_pixels)
