"""A module attribute that holds one call's state, kept per thread, so a second thread can predict with the
same replica while the first runs its batches.

transformers' Qwen2-VL-style models keep `rope_deltas` on the model between `generate`'s prefill and its
decode steps (the offsets of the 3-D rotary positions after the images). Two threads sharing the attribute
would decode with each other's offsets. Made per thread, every thread sees the value it last set, and a
thread that set none sees the value the attribute had when it was made per thread.
"""

from __future__ import annotations

import threading
from typing import Any

from torch import nn


class _PerThread:
    """A data descriptor on one instance's own subclass: the attribute's value in each thread."""

    def __init__(self, initial: Any) -> None:
        self.initial = initial
        self.local = threading.local()

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(self.local, "value", self.initial)

    def __set__(self, obj: Any, value: Any) -> None:
        self.local.value = value


def per_thread(module: nn.Module, name: str) -> bool:
    """Make `module.<name>` per thread (this instance only); False where the instance holds no such plain
    attribute (a version that keeps the state elsewhere: the caller must not share the replica then)."""
    if isinstance(getattr(type(module), name, None), _PerThread):
        return True
    if name not in vars(module):
        return False
    cls = type(module)
    own = type(cls.__name__, (cls,), {name: _PerThread(vars(module).pop(name)), "__module__": cls.__module__,
                                      "__qualname__": cls.__qualname__})
    module.__class__ = own
    return True


def share_with_threads(model: nn.Module, names: tuple[str, ...]) -> bool:
    """Make each attribute of `names` per thread on every submodule that holds it; False where one of them is
    held by none (this transformers version keeps that state elsewhere)."""
    found = {name: [per_thread(module, name) for module in model.modules() if _holds(module, name)] for name in names}
    return all(found.values())


def _holds(module: nn.Module, name: str) -> bool:
    return name in vars(module) or isinstance(getattr(type(module), name, None), _PerThread)
