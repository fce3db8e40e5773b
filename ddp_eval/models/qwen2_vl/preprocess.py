"""Planned batch -> Qwen2-VL inputs on the CPU: decode images, resize (qwen_vl_utils), chat template,
processor; with vision reuse each distinct image once, with prefix reuse the shared prefixes split off.

A row may show several images (MMMU): they go in the order its prompt names them, each expanded to its
own token count. With vision reuse the batch carries each distinct image once and `image_map` says,
per image shown (sequence by sequence, in prompt order), which distinct image it is. With prefix reuse
rows share a prefix only if they show the same images in the same order and the prefix holds all of
their image tokens, so each row's own suffix is plain text.

Runs inside DataLoader workers so that decoding and preprocessing overlap generation. A row whose
image cannot be used (missing, not base64, undecodable, 0 pixels, absurd aspect ratio) is set aside
with the reason; the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import astuple, dataclass
from typing import Any

import torch

from ddp_eval.core.batch import PreparedBatch
from ddp_eval.core.prefixes import SharedPrefixes, split_shared_prefixes
from ddp_eval.core.sample import Benchmark
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.common.row_images import rows_with_images
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
    """With vision reuse: `pixel_values` hold each distinct image once; the j-th image shown in the batch
    (sequence by sequence, in prompt order) is distinct image image_map[j] (a sequence is a row, or with
    prefix reuse a shared prefix, whose rows are in `suffix`)."""
    image_map: list[int]
    unique_grid_thw: torch.Tensor
    suffix: SuffixInputs | None = None

    def pin_memory(self) -> SharedImages:
        if self.suffix is not None:
            self.suffix = SuffixInputs(*(t.pin_memory() for t in astuple(self.suffix)))
        return self


def resized_image(benchmark: Benchmark, key: Hashable, min_pixels: int, max_pixels: int, patch_size: int = 14):
    """The image as qwen_vl_utils resizes it for a model of `patch_size`-pixel patches (14: Qwen2-VL,
    Qwen2.5-VL; 16: Qwen3-VL, whose sides become multiples of 32)."""
    from qwen_vl_utils import fetch_image

    image = benchmark.images.open(key)
    try:
        return fetch_image({"image": image, "min_pixels": min_pixels, "max_pixels": max_pixels},
                           image_patch_size=patch_size)
    except ValueError as err:  # e.g. aspect ratio beyond what the processor accepts
        if "must be > 0" in str(err):  # qwen_vl_utils' words when a side rounds down to nothing
            raise DdpEvalError(f"{benchmark.images.describe(key)}: a {image.width}x{image.height} image resized "
                               f"within model.min_pixels={min_pixels} and model.max_pixels={max_pixels} keeps no "
                               "pixels on its short side (too elongated for these bounds); raise model.max_pixels "
                               "or drop the row") from None
        raise DdpEvalError(f"{benchmark.images.describe(key)}: {err}") from None


def chat_messages(content: Content) -> list[dict[str, Any]]:
    """One user turn in the chat-template format: image placeholders and text, in the prompt's order."""
    return [{"role": "user", "content": [{"type": "image"} if item["type"] == "image" else dict(item)
                                         for item in content]}]


def chat_text(processor, content: Content) -> str:
    """The prompt as the model reads it: the chat template applied, one image placeholder per image."""
    return processor.apply_chat_template(chat_messages(content), tokenize=False, add_generation_prompt=True)


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
    patch_size: int = 14  # the vision tower's patch side in pixels (qwen_vl_utils' image_patch_size)
    # Whether the processor may resize qwen_vl_utils' image again (within the run's bounds, where qwen_vl_utils'
    # rounding left it outside them). VLMEvalKit's Qwen3-VL wrapper passes do_resize=False; its Qwen2-VL one does not.
    processor_resizes: bool = True

    def __call__(self, batch_id: int, indices: tuple[int, ...]) -> PreparedBatch:
        benchmark = self.benchmark
        rows, images, failed = rows_with_images(  # images: key -> resized image, decoded once per batch
            benchmark, indices, self.content,
            lambda bench, key: resized_image(bench, key, self.min_pixels, self.max_pixels, self.patch_size))
        ok = [index for index, _, _ in rows]
        shown = [keys for _, _, keys in rows]
        texts = [chat_text(self.processor, content) for _, content, _ in rows]
        batch = PreparedBatch(batch_id=batch_id, indices=tuple(ok), inputs=None, failed=failed,
                              choices=[self.choices(benchmark.by_index[i]) for i in ok])
        if not ok:
            return batch
        resize = {} if self.processor_resizes else {"do_resize": False}
        if not self.reuse_vision:
            batch.inputs = self.processor(text=texts, images=[images[k] for keys in shown for k in keys],
                                          padding=True, return_tensors="pt", **resize)
            return batch
        return _with_shared_images(self.processor, batch, texts, shown, images, self.reuse_prefix, resize)


def _with_shared_images(processor, batch: PreparedBatch, texts: list[str], shown: list[tuple[Hashable, ...]],
                        images: dict[Hashable, Any], reuse_prefix: bool, resize: dict[str, bool]) -> PreparedBatch:
    """Each distinct image preprocessed once; each row's text expanded to its images' token counts, image
    by image, as the processor itself expands it."""
    distinct = list(dict.fromkeys(k for keys in shown for k in keys))
    position = {k: i for i, k in enumerate(distinct)}
    image_inputs = processor.image_processor(images=[images[k] for k in distinct], return_tensors="pt", **resize)
    grid = image_inputs["image_grid_thw"]
    merge = processor.image_processor.merge_size
    n_tokens = (grid.prod(-1) // merge**2).tolist()
    token = processor.image_token
    texts = [_expand(t, token, [n_tokens[position[k]] for k in keys]) for t, keys in zip(texts, shown)]
    # The processor refuses image tokens without images, so tokenize as it would after expanding.
    suffix = None
    if reuse_prefix:
        rows = processor.tokenizer(texts)["input_ids"]
        shared = split_shared_prefixes(rows, shown, [_image_end(r, processor.image_token_id) for r in rows])
        sequences = [[position[k] for k in keys] for keys in shared.image_key]
        inputs = _padded(processor, shared.prefixes)
        suffix = _suffix_inputs(processor, shared, grid, sequences, merge)
    else:
        sequences = [[position[k] for k in keys] for keys in shown]
        inputs = processor.tokenizer(texts, padding=True, return_tensors="pt")
    image_map = [i for images_of in sequences for i in images_of]
    if "mm_token_type_ids" in processor.model_input_names:  # newer transformers: 1 marks image tokens
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == processor.image_token_id).to(inputs["input_ids"].dtype)
    inputs["pixel_values"] = image_inputs["pixel_values"]
    inputs["image_grid_thw"] = grid[image_map]  # per image shown: the language model's rotary positions need it
    batch.inputs, batch.extras = inputs, SharedImages(image_map, grid, suffix)
    return batch


def _expand(text: str, token: str, counts: list[int]) -> str:
    """Each image placeholder of `text` repeated to its image's token count, in order."""
    parts = text.split(token)
    if len(parts) != len(counts) + 1:
        raise DdpEvalError(f"the prompt holds {len(parts) - 1} image placeholders for {len(counts)} images")
    return parts[0] + "".join(token * n + part for n, part in zip(counts, parts[1:]))


def _image_end(ids: list[int], image_token_id: int) -> int:
    return max((i + 1 for i, t in enumerate(ids) if t == image_token_id), default=0)


def _padded(processor, rows: list[list[int]]):
    """Left-padded ids and attention mask, as the tokenizer pads for generation."""
    return processor.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")


def _suffix_inputs(processor, shared: SharedPrefixes, grid, prefix_images: list[list[int]],
                   merge: int) -> SuffixInputs:
    suffix = _padded(processor, shared.suffixes)
    shift = [rope_shift([tuple(grid[m].tolist()) for m in images_of], merge) for images_of in prefix_images]
    start = [len(shared.prefixes[p]) + shift[p] for p in shared.owner]
    return SuffixInputs(input_ids=suffix["input_ids"], attention_mask=suffix["attention_mask"],
                        owner=torch.tensor(shared.owner), position_start=torch.tensor(start))
