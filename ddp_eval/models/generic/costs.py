"""Row -> approximate prompt tokens for a generic checkpoint (image tokens + text), for planning batches.

Image tokens come from the processor itself where it can count them for an image size
(`_get_num_multimodal_tokens`, which tiling processors answer per size), else one count per image
read from the processor or config.json (`image_seq_length`, `num_image_tokens`, `mm_tokens_per_image`,
else the vision tower's patches). Reads each distinct image's header once (no decoding); a row whose
image cannot be read costs its text only and fails with its reason when its batch is prepared.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from ddp_eval.core.sample import Benchmark, Sample
from ddp_eval.errors import DdpEvalError

FALLBACK_IMAGE_TOKENS = 576  # LLaVA-1.5's 24 x 24, where neither processor nor config says


def tokens_per_image(processor: Any, model_dir: Path) -> int:
    """One image's token count as the processor or config.json states it."""
    for name in ("image_seq_length", "num_image_tokens"):
        value = getattr(processor, name, None)
        if isinstance(value, int) and value > 0:
            return value
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        config = {}
    for name in ("mm_tokens_per_image", "image_seq_length"):
        value = config.get(name)
        if isinstance(value, int) and value > 0:
            return value
    vision = config.get("vision_config") or {}
    size, patch = vision.get("image_size"), vision.get("patch_size")
    size, patch = (v[0] if isinstance(v, list) and v else v for v in (size, patch))
    if isinstance(size, int) and isinstance(patch, int) and patch > 0:
        return (size // patch) ** 2
    return FALLBACK_IMAGE_TOKENS


def image_token_counts(processor: Any, sizes: list[tuple[int, int]], fallback: int) -> list[int]:
    """Tokens per image of each (height, width), as the processor counts them; `fallback` each if it cannot."""
    counter = getattr(processor, "_get_num_multimodal_tokens", None)
    if counter is not None and sizes:
        try:
            counts = counter(image_sizes=[list(s) for s in sizes])["num_image_tokens"]
        except (AttributeError, KeyError, TypeError, ValueError, NotImplementedError):
            counts = None
        if counts is not None and len(counts) == len(sizes):
            return [int(n) for n in counts]
    return [fallback] * len(sizes)


def row_costs(benchmark: Benchmark, text: Callable[[Sample], str], processor: Any, model_dir: Path) -> dict[int, int]:
    """Approximate prompt tokens per row: its images' tokens + the prompt text's length / 4."""
    sizes: dict[Hashable, tuple[int, int] | None] = {}
    for s in benchmark.samples:
        for key in s.image_keys:
            if key not in sizes:
                try:
                    width, height = benchmark.images.size(key)
                    sizes[key] = (height, width)
                except DdpEvalError:
                    sizes[key] = None  # fails again, with its reason, when its batch is prepared
    distinct = sorted({size for size in sizes.values() if size is not None})
    counted = dict(zip(distinct, image_token_counts(processor, distinct, tokens_per_image(processor, model_dir))))
    image_tokens = {key: counted.get(size, 0) if size is not None else 0 for key, size in sizes.items()}
    return {s.index: sum(image_tokens[k] for k in s.image_keys) + len(text(s)) // 4 for s in benchmark.samples}
