"""The image size qwen_vl_utils resizes to, computed without importing it (it pulls in torchvision and more:
~4 s before a run can plan its batches). Pure arithmetic, the same rule as its `smart_resize`: each side
rounded to a multiple of `factor` (patch side x spatial merge), then scaled, keeping the aspect ratio, into
[min_pixels, max_pixels]. tests/test_resize.py checks it against qwen_vl_utils itself.
"""

from __future__ import annotations

import math

MAX_ASPECT = 200  # qwen_vl_utils refuses images more elongated than this


def resized_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) after resizing; ValueError for an image more elongated than 200:1, as qwen_vl_utils."""
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT}, got "
                         f"{max(height, width) / min(height, width)}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        return math.floor(height / shrink / factor) * factor, math.floor(width / shrink / factor) * factor
    if h * w < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        return math.ceil(height * grow / factor) * factor, math.ceil(width * grow / factor) * factor
    return h, w
