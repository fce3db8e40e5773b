"""The planner's resize arithmetic (core/resize.py) gives qwen_vl_utils' own sizes, for both patch factors."""

from __future__ import annotations

import random

import pytest
from qwen_vl_utils import smart_resize

from ddp_eval.core.resize import resized_size

BOUNDS = [(1280 * 28 * 28, 16384 * 28 * 28, 28), (3136, 50176, 28), (4 * 32 * 32, 16384 * 32 * 32, 32),
          (10 * 10 * 32 * 32, 16384 * 32 * 32, 32)]


@pytest.mark.parametrize("low,high,factor", BOUNDS)
def test_resized_size_equals_qwen_vl_utils(low, high, factor):
    rng = random.Random(factor + low)
    sides = [(h, w) for h in (1, 13, 14, 27, 28, 29, 55, 56, 300, 1000, 4096) for w in (28, 33, 200, 511, 2000)]
    sides += [(rng.randint(20, 9000), rng.randint(20, 9000)) for _ in range(400)]
    for h, w in sides:
        if max(h, w) / min(h, w) > 200:
            with pytest.raises(ValueError):
                resized_size(h, w, factor, low, high)
            continue
        assert resized_size(h, w, factor, low, high) == smart_resize(h, w, factor=factor, min_pixels=low,
                                                                      max_pixels=high), (h, w)
