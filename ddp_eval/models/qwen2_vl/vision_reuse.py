"""Run the vision tower once per distinct image of a batch and give every row its image's features.

MMBench asks each question 2-4 times with the options rotated, all on one image; the vision tower is
most of the prefill. The batch carries each distinct image's pixels once (see `inputs`), plus which
image each row shows. This wraps the tower's forward: it encodes the distinct images, then repeats
each image's output for every row that shows it, so the model sees exactly what it would have seen
with the image repeated. Works with any tower called as `visual(pixel_values, grid_thw=...)` (Qwen2-VL,
Qwen2.5-VL, Qwen3-VL), whether it returns a tensor or an output object. Qwen3-VL's output also holds a
list of DeepStack features (one tensor per tapped vision layer, per merged token, added to the language
model's first layers at the image positions): each tensor of such a list is repeated the same way.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

from ddp_eval.errors import DdpEvalError


def find_vision_tower(model: nn.Module, setting: str = "model.reuse_vision=false") -> nn.Module:
    for owner in (model, getattr(model, "model", None)):
        visual = getattr(owner, "visual", None)
        if isinstance(visual, nn.Module):
            return visual
    raise DdpEvalError(f"{setting.split('=')[0]}: {type(model).__name__} has no vision tower at .visual; "
                       f"set {setting}")


class VisionReuse:
    """Installed once per replica; `share(image_map, grid)` before each generate call, `clear()` after.
    What is shared is per thread: a thread predicting alongside the batches (the parity rows) runs the
    tower as it is."""

    def __init__(self, model: nn.Module) -> None:
        self.visual = find_vision_tower(model)
        self.tower_forward = self.visual.forward
        self.visual.forward = self.forward
        self.shared = threading.local()  # .image_map, .grid: this thread's batch

    def share(self, image_map: list[int], grid: torch.Tensor) -> None:
        self.shared.image_map, self.shared.grid = image_map, grid

    def clear(self) -> None:
        self.shared.image_map = self.shared.grid = None

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor | None = None, **kwargs: Any):
        image_map, grid = getattr(self.shared, "image_map", None), getattr(self.shared, "grid", None)
        if image_map is None:
            return self.tower_forward(hidden_states, grid_thw=grid_thw, **kwargs)
        patches = grid.prod(-1).tolist()  # from the CPU copy: no wait for the GPU
        grid = grid.to(grid_thw.device if grid_thw is not None else hidden_states.device)
        output = self.tower_forward(hidden_states, grid_thw=grid, **kwargs)
        merged = [p // self.visual.spatial_merge_size**2 for p in patches]
        if isinstance(output, torch.Tensor):
            return _repeat(output, patches, merged, image_map)
        for name, value in list(output.items()):
            if isinstance(value, torch.Tensor):
                output[name] = _repeat(value, patches, merged, image_map)
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
                output[name] = type(value)(_repeat(v, patches, merged, image_map) for v in value)
        return output


def _repeat(features: torch.Tensor, patches: list[int], merged: list[int], image_map: list[int]) -> torch.Tensor:
    """Per-image rows of `features` (per patch or per merged token) in the order rows show them."""
    for sizes in (merged, patches):
        if features.shape[0] == sum(sizes):
            pieces = torch.split(features, sizes)
            return torch.cat([pieces[i] for i in image_map])
    return features  # not per image (e.g. a pooled summary): leave it
