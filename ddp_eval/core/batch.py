"""A planned batch after preprocessing: what a backend turns into replies (torch-free container)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PreparedBatch:
    batch_id: int
    indices: tuple[int, ...]  # rows in `inputs`, in order
    inputs: Any = None  # the model family's inputs (a mapping of CPU tensors), or None when every row failed
    failed: dict[int, str] = field(default_factory=dict)  # row index -> why it has no input
    choices: list[tuple[str, ...]] = field(default_factory=list)  # per row: the labels choice_logits picks from
    # The model family's own additions for its speed features (shared images, prefix split); it offers
    # `pin_memory()` and `to(device)`.
    extras: Any = None

    def pin_memory(self) -> PreparedBatch:
        """Called by the DataLoader's pinning thread, so host-to-device copies can be asynchronous."""
        if self.inputs is not None:
            for name, value in self.inputs.items():
                if hasattr(value, "pin_memory"):
                    self.inputs[name] = value.pin_memory()
        if self.extras is not None:
            self.extras = self.extras.pin_memory()
        return self
