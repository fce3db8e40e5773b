"""Qwen2-VL's multimodal rotary positions for text after images (pure arithmetic)."""

from __future__ import annotations

from collections.abc import Sequence


def rope_shift(grids: Sequence[tuple[int, int, int]], merge_size: int) -> int:
    """How far Qwen2-VL's rotary position runs behind the token count after these images.

    Multimodal RoPE gives an image of t x h x w patches t*h*w/merge^2 tokens but advances the position
    only by max(h, w)/merge (as `get_rope_index` does), so text after it sits at token index + shift.
    """
    return sum(max(h, w) // merge_size - t * h * w // merge_size**2 for t, h, w in grids)


def text_positions(positions):
    """Text positions (rows, tokens) as multimodal RoPE's three equal components (a torch tensor)."""
    return positions[None].expand(3, -1, -1)
