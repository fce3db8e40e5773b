"""Planned batch -> model inputs on the CPU: decode images, resize (qwen_vl_utils), chat template, processor.

Runs inside DataLoader workers so that decoding and preprocessing overlap generation. A row whose
image cannot be used (missing, not base64, undecodable, 0 pixels, absurd aspect ratio) is set aside
with the reason; the rest of the batch goes on.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from ddp_eval.data.rows import Benchmark, Sample
from ddp_eval.errors import DdpEvalError
from ddp_eval.plan import PlannedBatch
from ddp_eval.prefixes import SharedPrefixes, rope_shift, split_shared_prefixes
from ddp_eval.prompts import build_messages


@dataclass
class SuffixInputs:
    """Per row, the tokens after its shared prefix (left-padded) and where they continue from."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    owner: torch.Tensor  # row -> its prefix in the batch's inputs
    position_start: torch.Tensor  # row -> rotary position of its first suffix token

    def to(self, device) -> SuffixInputs:
        return SuffixInputs(*(t.to(device, non_blocking=True) for t in astuple(self)))


@dataclass
class PreparedBatch:
    batch_id: int
    indices: tuple[int, ...]  # rows in `inputs`, in order
    inputs: Any  # transformers BatchFeature with CPU tensors, or None when every row failed
    failed: dict[int, str] = field(default_factory=dict)  # row index -> why it has no input
    # With vision reuse: pixel_values hold each distinct image once; row i shows image image_map[i].
    image_map: list[int] | None = None
    unique_grid_thw: Any = None
    # With prefix reuse: `inputs` hold the shared prefixes (image_map is per prefix) and this each row's rest.
    prefix: SuffixInputs | None = None
    letters: list[tuple[str, ...]] = field(default_factory=list)  # each row's option letters

    def pin_memory(self) -> PreparedBatch:
        """Called by the DataLoader's pinning thread, so host-to-device copies can be asynchronous."""
        if self.inputs is not None:
            for name, value in self.inputs.items():
                if hasattr(value, "pin_memory"):
                    self.inputs[name] = value.pin_memory()
        if self.prefix is not None:
            self.prefix = SuffixInputs(*(t.pin_memory() for t in astuple(self.prefix)))
        return self


def resized_image(benchmark: Benchmark, sample: Sample, min_pixels: int, max_pixels: int):
    from qwen_vl_utils import fetch_image

    image = benchmark.images.open(sample.image_key)
    try:
        return fetch_image({"image": image, "min_pixels": min_pixels, "max_pixels": max_pixels})
    except ValueError as err:  # e.g. aspect ratio beyond what the processor accepts
        raise DdpEvalError(f"{benchmark.images.describe(sample.image_key)}: {err}") from None


def prepare_batch(processor, benchmark: Benchmark, batch_id: int, indices: tuple[int, ...], min_pixels: int,
                  max_pixels: int, reuse_vision: bool = False, reuse_prefix: bool = False) -> PreparedBatch:
    texts, keys, ok, failed = [], [], [], {}
    images: dict[int, Any] = {}  # image key -> resized image, decoded once per batch
    for index in indices:
        sample = benchmark.by_index[index]
        try:
            if sample.image_key not in images:
                images[sample.image_key] = resized_image(benchmark, sample, min_pixels, max_pixels)
        except DdpEvalError as err:
            failed[index] = str(err)
            continue
        ok.append(index)
        keys.append(sample.image_key)
        texts.append(processor.apply_chat_template(build_messages(sample), tokenize=False,
                                                   add_generation_prompt=True))
    batch = PreparedBatch(batch_id=batch_id, indices=tuple(ok), inputs=None, failed=failed,
                          letters=[tuple(benchmark.by_index[i].options) for i in ok])
    if not ok:
        return batch
    if not reuse_vision:
        batch.inputs = processor(text=texts, images=[images[k] for k in keys], padding=True, return_tensors="pt")
        return batch
    return _with_shared_images(processor, batch, texts, keys, images, reuse_prefix)


def _with_shared_images(processor, batch: PreparedBatch, texts: list[str], keys: list[int],
                        images: dict[int, Any], reuse_prefix: bool) -> PreparedBatch:
    """Each distinct image preprocessed once; each row's text expanded to its image's token count,
    as the processor itself expands it."""
    distinct = list(dict.fromkeys(keys))
    image_inputs = processor.image_processor(images=[images[k] for k in distinct], return_tensors="pt")
    grid = image_inputs["image_grid_thw"]
    merge = processor.image_processor.merge_size
    n_tokens = (grid.prod(-1) // merge**2).tolist()
    token = processor.image_token
    texts = [t.replace(token, token * n_tokens[distinct.index(k)]) for t, k in zip(texts, keys)]
    # The processor refuses image tokens without images, so tokenize as it would after expanding.
    if reuse_prefix:
        rows = processor.tokenizer(texts)["input_ids"]
        shared = split_shared_prefixes(rows, keys, [_image_end(r, processor.image_token_id) for r in rows])
        batch.image_map = [distinct.index(k) for k in shared.image_key]
        inputs = _padded(processor, shared.prefixes)
        batch.prefix = _suffix_inputs(processor, shared, grid, batch.image_map, merge)
    else:
        batch.image_map = [distinct.index(k) for k in keys]
        inputs = processor.tokenizer(texts, padding=True, return_tensors="pt")
    if "mm_token_type_ids" in processor.model_input_names:  # newer transformers: 1 marks image tokens
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == processor.image_token_id).to(inputs["input_ids"].dtype)
    inputs["pixel_values"] = image_inputs["pixel_values"]
    inputs["image_grid_thw"] = grid[batch.image_map]  # per sequence: the language model's rotary positions need it
    batch.inputs, batch.unique_grid_thw = inputs, grid
    return batch


def _image_end(ids: list[int], image_token_id: int) -> int:
    return max((i + 1 for i, t in enumerate(ids) if t == image_token_id), default=0)


def _padded(processor, rows: list[list[int]]):
    """Left-padded ids and attention mask, as the tokenizer pads for generation."""
    return processor.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")


def _suffix_inputs(processor, shared: SharedPrefixes, grid, prefix_image: list[int], merge: int) -> SuffixInputs:
    suffix = _padded(processor, shared.suffixes)
    shift = [rope_shift([tuple(grid[m].tolist())], merge) for m in prefix_image]
    start = [len(shared.prefixes[p]) + shift[p] for p in shared.owner]
    return SuffixInputs(input_ids=suffix["input_ids"], attention_mask=suffix["attention_mask"],
                        owner=torch.tensor(shared.owner), position_start=torch.tensor(start))


class BatchDataset(Dataset):
    """Item i is the i-th planned batch of this rank, fully preprocessed."""

    def __init__(self, processor, benchmark: Benchmark, batches: list[PlannedBatch], min_pixels: int,
                 max_pixels: int, reuse_vision: bool = False, reuse_prefix: bool = False) -> None:
        self.processor = processor
        self.benchmark = benchmark
        self.batches = batches
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.reuse_vision = reuse_vision
        self.reuse_prefix = reuse_prefix

    def __len__(self) -> int:
        return len(self.batches)

    def prepare(self, batch_id: int, indices: tuple[int, ...]) -> PreparedBatch:
        return prepare_batch(self.processor, self.benchmark, batch_id, indices, self.min_pixels, self.max_pixels,
                             self.reuse_vision, self.reuse_prefix)

    def __getitem__(self, i: int) -> PreparedBatch:
        batch = self.batches[i]
        return self.prepare(batch.batch_id, batch.indices)
