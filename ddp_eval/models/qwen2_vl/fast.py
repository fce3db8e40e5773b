"""The Qwen2-VL family's speed features around one batch, for the transformers backend: the vision
tower encodes each distinct image once, and the prefix decoder prefills shared prefixes once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ddp_eval.core.batch import PreparedBatch
from ddp_eval.models.base import Speed
from ddp_eval.models.qwen2_vl.prefix_decode import PrefixDecoder
from ddp_eval.models.qwen2_vl.vision_reuse import VisionReuse


class Qwen2VLFastPath:
    def __init__(self, model, speed: Speed) -> None:
        self.vision_reuse = VisionReuse(model) if speed.reuse_vision else None
        self.prefix_decoder = PrefixDecoder(model, speed.decode_graphs) if speed.reuse_prefix else None

    @contextlib.contextmanager
    def batch(self, prepared: PreparedBatch) -> Iterator[None]:
        shared = prepared.extras
        if self.vision_reuse is None or shared is None:
            yield
            return
        self.vision_reuse.share(shared.image_map, shared.unique_grid_thw)
        try:
            yield
        finally:
            self.vision_reuse.clear()

    def row_tokens(self, prepared: PreparedBatch) -> list[int]:
        """Each row's prompt length: its shared prefix plus its own tokens."""
        prefix = prepared.inputs["attention_mask"].sum(-1).tolist()
        suffix = prepared.extras.suffix
        return [prefix[o] + n for o, n in zip(suffix.owner.tolist(), suffix.attention_mask.sum(-1).tolist())]

    def takes(self, prepared: PreparedBatch) -> bool:
        return self.prefix_decoder is not None and prepared.extras is not None and prepared.extras.suffix is not None

    def first_logits(self, inputs, prepared: PreparedBatch):
        device = inputs["input_ids"].device
        return self.prefix_decoder.first_logits(inputs, prepared.extras.suffix.to(device))[0]

    def generate(self, inputs, prepared: PreparedBatch, max_new_tokens: int):
        device = inputs["input_ids"].device
        return self.prefix_decoder.generate(inputs, prepared.extras.suffix.to(device), max_new_tokens)
