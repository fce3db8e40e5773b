"""Planned batch -> Qwen2-VL inputs on the CPU: decode images, resize (qwen_vl_utils), chat template,
processor; with vision reuse each distinct image once, with prefix reuse the shared prefixes split off.

Runs inside DataLoader workers so that decoding and preprocessing overlap generation. A row whose
image cannot be used (missing, not base64, undecodable, 0 pixels, absurd aspect ratio) is set aside
with the reason; the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any

import torch

from ddp_eval.core.batch import PreparedBatch
from ddp_eval.core.prefixes import SharedPrefixes, split_shared_prefixes
from ddp_eval.core.sample import Benchmark
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.qwen2_vl.positions import rope_shift
from ddp_eval.tasks.base import Content


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
class SharedImages:
    """With vision reuse: `pixel_values` hold each distinct image once; sequence i shows image image_map[i]
    (a sequence is a row, or with prefix reuse a shared prefix, whose rows are in `suffix`)."""
    image_map: list[int]
    unique_grid_thw: torch.Tensor
    suffix: SuffixInputs | None = None

    def pin_memory(self) -> SharedImages:
        if self.suffix is not None:
            self.suffix = SuffixInputs(*(t.pin_memory() for t in astuple(self.suffix)))
        return self


def resized_image(benchmark: Benchmark, key: int, min_pixels: int, max_pixels: int):
    from qwen_vl_utils import fetch_image

    image = benchmark.images.open(key)
    try:
        return fetch_image({"image": image, "min_pixels": min_pixels, "max_pixels": max_pixels})
    except ValueError as err:  # e.g. aspect ratio beyond what the processor accepts
        raise DdpEvalError(f"{benchmark.images.describe(key)}: {err}") from None


def chat_messages(content: Content) -> list[dict[str, Any]]:
    """One user turn in the chat-template format: image placeholders and text, in the prompt's order."""
    return [{"role": "user", "content": [{"type": "image"} if item["type"] == "image" else dict(item)
                                         for item in content]}]


@dataclass
class Preprocess:
    """Item maker for the DataLoader workers: (batch id, row indices) -> PreparedBatch."""

    processor: Any
    benchmark: Benchmark
    content: Callable[[Any], Content]  # sample -> prompt content (the family's or the benchmark's prompt)
    choices: Callable[[Any], tuple[str, ...]]
    min_pixels: int
    max_pixels: int
    reuse_vision: bool = False
    reuse_prefix: bool = False

    def __call__(self, batch_id: int, indices: tuple[int, ...]) -> PreparedBatch:
        processor, benchmark = self.processor, self.benchmark
        texts, keys, ok, failed = [], [], [], {}
        images: dict[int, Any] = {}  # image key -> resized image, decoded once per batch
        for index in indices:
            sample = benchmark.by_index[index]
            if len(sample.image_keys) != 1:
                failed[index] = (f"row index {index} shows {len(sample.image_keys)} images; this model family's "
                                 "inputs take exactly one image per row")
                continue
            key = sample.image_keys[0]
            try:
                if key not in images:
                    images[key] = resized_image(benchmark, key, self.min_pixels, self.max_pixels)
            except DdpEvalError as err:
                failed[index] = str(err)
                continue
            ok.append(index)
            keys.append(key)
            texts.append(processor.apply_chat_template(chat_messages(self.content(sample)), tokenize=False,
                                                       add_generation_prompt=True))
        batch = PreparedBatch(batch_id=batch_id, indices=tuple(ok), inputs=None, failed=failed,
                              choices=[self.choices(benchmark.by_index[i]) for i in ok])
        if not ok:
            return batch
        if not self.reuse_vision:
            batch.inputs = processor(text=texts, images=[images[k] for k in keys], padding=True,
                                     return_tensors="pt")
            return batch
        return _with_shared_images(processor, batch, texts, keys, images, self.reuse_prefix)


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
    suffix = None
    if reuse_prefix:
        rows = processor.tokenizer(texts)["input_ids"]
        shared = split_shared_prefixes(rows, keys, [_image_end(r, processor.image_token_id) for r in rows])
        image_map = [distinct.index(k) for k in shared.image_key]
        inputs = _padded(processor, shared.prefixes)
        suffix = _suffix_inputs(processor, shared, grid, image_map, merge)
    else:
        image_map = [distinct.index(k) for k in keys]
        inputs = processor.tokenizer(texts, padding=True, return_tensors="pt")
    if "mm_token_type_ids" in processor.model_input_names:  # newer transformers: 1 marks image tokens
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == processor.image_token_id).to(inputs["input_ids"].dtype)
    inputs["pixel_values"] = image_inputs["pixel_values"]
    inputs["image_grid_thw"] = grid[image_map]  # per sequence: the language model's rotary positions need it
    batch.inputs, batch.extras = inputs, SharedImages(image_map, grid, suffix)
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
