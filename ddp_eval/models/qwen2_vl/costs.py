"""Row -> approximate prompt tokens (image tokens after Qwen2-VL's resizing + text), for planning batches.

The resize factor is the vision patch side times the spatial merge (2): 28 pixels for Qwen2-VL and
Qwen2.5-VL (14-pixel patches), 32 for Qwen3-VL (16-pixel patches); one image token per factor^2 pixels.

Reads each distinct image's header once (no decoding); a row whose image cannot be read costs its
text only and fails with its reason when its batch is prepared.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from ddp_eval.core.resize import resized_size
from ddp_eval.core.sample import Benchmark, Sample
from ddp_eval.errors import DdpEvalError

PATCH_FACTOR = 28  # patch size 14 x spatial merge 2: one image token per 28 x 28 pixels


def row_costs(benchmark: Benchmark, text: Callable[[Sample], str], min_pixels: int, max_pixels: int,
              factor: int = PATCH_FACTOR) -> dict[int, int]:
    """Approximate prompt tokens per row: image tokens after resizing by `factor` + the prompt text's length / 4."""
    image_tokens: dict[Hashable, int] = {}
    costs = {}
    for s in benchmark.samples:
        for key in s.image_keys:
            if key not in image_tokens:
                try:
                    width, height = benchmark.images.size(key)
                    h, w = resized_size(height, width, factor, min_pixels, max_pixels)
                    image_tokens[key] = (h // factor) * (w // factor)
                except (DdpEvalError, ValueError):
                    image_tokens[key] = 0  # fails again, with its reason, when its batch is prepared
        costs[s.index] = sum(image_tokens[k] for k in s.image_keys) + len(text(s)) // 4
    return costs
