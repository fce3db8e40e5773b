"""Row -> approximate prompt tokens (image tokens after resizing + text), for planning batches.

Reads each distinct image's header once (no decoding); a row whose image cannot be read costs its
text only and fails with its reason when its batch is prepared.
"""

from __future__ import annotations

from ddp_eval.data.rows import Benchmark
from ddp_eval.errors import DdpEvalError
from ddp_eval.prompts import build_prompt


def row_costs(benchmark: Benchmark, min_pixels: int, max_pixels: int) -> dict[int, int]:
    """Approximate prompt tokens per row: image tokens after resizing + text length / 4."""
    from qwen_vl_utils import smart_resize

    image_tokens: dict[int, int] = {}
    costs = {}
    for s in benchmark.samples:
        if s.image_key not in image_tokens:
            try:
                width, height = benchmark.images.size(s.image_key)
                h, w = smart_resize(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
                image_tokens[s.image_key] = (h // 28) * (w // 28)
            except (DdpEvalError, ValueError):
                image_tokens[s.image_key] = 0  # fails again, with its reason, when its batch is prepared
        costs[s.index] = image_tokens[s.image_key] + len(build_prompt(s)) // 4
    return costs
