"""What a model family brings: its replica, its inputs, its token costs and the speed features it offers.

Every speed feature that patches transformers internals is declared here as a `Feature` with the
transformers versions it was tested on. `resolve_speed` decides once per run which features are used
(config + family + installed transformers) and the result, a `Speed`, goes to both the
preprocessing and the backend, so the two halves cannot disagree. Outside the tested versions a
feature that is only on by default is dropped with a log line (the plain `generate` path runs); one
the user asked for stops the run with an error naming the version.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ddp_eval.config import Config, ModelConfig, plain_greedy
from ddp_eval.core.batch import PreparedBatch
from ddp_eval.core.sample import Benchmark, Sample
from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.base import Content, Task, TaskSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Feature:
    key: str  # its switch under model.
    what: str  # one line for doctor and the logs
    tested: tuple[str, str] | None  # transformers (lowest, highest) major.minor it was tested on; None: no patch

    def tested_on(self, version: str) -> bool:
        if self.tested is None:
            return True
        return _minor(self.tested[0]) <= _minor(version) <= _minor(self.tested[1])


def _minor(version: str) -> tuple[int, int]:
    parts = version.split(".")
    digits = ["".join(ch for ch in p if ch.isdigit()) or "0" for p in (parts + ["0"])[:2]]
    return int(digits[0]), int(digits[1])


@dataclass(frozen=True)
class Speed:
    """The speed features one run uses; decided once by `resolve_speed`."""

    reuse_vision: bool = False
    reuse_prefix: bool = False
    decode_graphs: bool = False
    vision_attention: str = "sdpa"  # auto / sdpa / varlen / cudnn / fa4 / triton; the kernel is picked at load
    kv_head_attention: bool = False
    fused_rotary: bool = False
    fused_activation: bool = False
    compile_vision: bool = False


@dataclass(frozen=True)
class Pixels:
    """Image resizing bounds for this run: the task's override, else the config's, else the family's default."""

    min_pixels: int
    max_pixels: int


class FastPath(Protocol):
    """A family's speed features around one batch, for the transformers backend."""

    def batch(self, prepared: PreparedBatch) -> AbstractContextManager: ...

    def takes(self, prepared: PreparedBatch) -> bool: ...  # whether it decodes this batch itself

    def row_tokens(self, prepared: PreparedBatch) -> list[int]: ...  # prompt length per row, when it takes it

    def first_logits(self, inputs: Any, prepared: PreparedBatch) -> Any: ...

    def generate(self, inputs: Any, prepared: PreparedBatch, max_new_tokens: int) -> Any: ...


Preprocessor = Callable[[int, tuple[int, ...]], PreparedBatch]  # (batch id, row indices) -> inputs on the CPU


class ModelFamily(ABC):
    name: str
    model_types: tuple[str, ...]  # config.json model_type values it serves
    features: tuple[Feature, ...] = ()
    default_pixels: tuple[int, int]  # (min, max) as VLMEvalKit sets them for this family
    plain_path: str | None = None  # why the family offers no speed features (plain `generate`), for logs and doctor
    # Attributes where the family's model keeps one call's state between its forward passes (Qwen2-VL:
    # rope_deltas). Made per thread, a second thread can predict with the same replica (the parity rows,
    # alongside the batches). None: not known to be safe, so rows are never predicted in two threads.
    thread_state: tuple[str, ...] | None = None

    def pixels(self, cfg: Config, settings: TaskSettings, benchmark: str = "") -> Pixels:
        """The bounds a run on `benchmark` resizes within: what the user set (model.min_pixels / max_pixels),
        else the family's own setting for that benchmark, else the task's, else the family's default."""
        own = self.benchmark_pixels(benchmark)

        def pick(key: str, task_value: int | None, own_value: int | None, default: int) -> int:
            value = getattr(cfg.model, key)
            if cfg.is_set(f"model.{key}") and value is not None:
                return value
            return own_value or task_value or value or default

        low = pick("min_pixels", settings.min_pixels, own[0], self.default_pixels[0])
        high = pick("max_pixels", settings.max_pixels, own[1], self.default_pixels[1])
        if high < low:
            raise DdpEvalError(f"model.min_pixels ({low}) must be <= model.max_pixels ({high})")
        return Pixels(low, high)

    def benchmark_pixels(self, benchmark: str) -> tuple[int | None, int | None]:
        """(min, max) pixels VLMEvalKit's wrapper for this family sets for one benchmark (None: no setting)."""
        return None, None

    def content(self, task: Task, sample: Sample, benchmark: str) -> Content:
        """The prompt this family is given for a row: the benchmark's own, unless the family builds its own."""
        return task.content(sample, benchmark)

    def render(self, processor: Any, content: Content) -> str:
        """The text the model reads for this prompt (the chat template applied), for `ddp_eval prompts`."""
        raise DdpEvalError(f"the {self.name} family cannot show its chat-template text")

    @abstractmethod
    def load_processor(self, cfg: ModelConfig, pixels: Pixels) -> Any: ...

    @abstractmethod
    def load_model(self, cfg: ModelConfig, device: Any, speed: Speed) -> Any: ...

    @abstractmethod
    def preprocessor(self, processor: Any, benchmark: Benchmark, task: Task, speed: Speed,
                     pixels: Pixels) -> Preprocessor: ...

    @abstractmethod
    def costs(self, benchmark: Benchmark, task: Task, pixels: Pixels) -> dict[int, int]:
        """Approximate prompt tokens per row (image tokens after resizing + text), for planning batches."""

    def fast_path(self, model: Any, speed: Speed) -> FastPath | None:
        return None

    def kernels_ahead(self, cfg: ModelConfig, device: Any, speed: Speed) -> list[Callable[[], None]]:
        """Calls that compile the kernels `load_model` will switch on, at the checkpoint's shapes; a thread asks
        for them and runs them before the model is loaded (models/loading.py `build_ahead`); none by default."""
        return []


_SWITCHES = ("reuse_vision", "reuse_prefix", "decode_graphs", "vision_attention", "kv_head_attention",
             "fused_rotary", "fused_activation", "compile_vision")


def _wanted(value: Any, key: str) -> bool:
    return value != "sdpa" if key == "vision_attention" else bool(value)


def proven_default(cfg: Config, key: str, device_type: str) -> bool:
    """What a switch left at null means: the shared-prefix decoder (and its decode graphs) where the
    float32 tests prove it gives the same predictions and a GPU makes it pay: CUDA, greedy decoding. The fused
    vision kernels: CUDA (they give transformers' values bit for bit, bench/rotary.py and quick_gelu.py)."""
    if key in ("fused_rotary", "fused_activation"):
        return device_type == "cuda"
    return device_type == "cuda" and plain_greedy(cfg.generation) and cfg.model.reuse_vision


def resolve_speed(cfg: Config, family: ModelFamily, transformers_version: str, device_type: str = "cpu",
                  report: bool = True) -> Speed:
    """The features this run uses on `device_type`. Errors name the key when an explicitly asked feature
    cannot run; a feature on by default that cannot is left out with a log line (`report`: the plan's call)."""
    offered = {f.key: f for f in family.features}
    chosen: dict[str, Any] = {}
    for key in _SWITCHES:
        value = getattr(cfg.model, key)
        explicit = cfg.is_set(f"model.{key}") and value is not None
        if value is None:
            value = proven_default(cfg, key, device_type)
        if not _wanted(value, key):
            chosen[key] = value
            continue
        feature = offered.get(key)
        problem = (f"the {family.name} family does not offer it" if feature is None else
                   None if feature.tested_on(transformers_version) else
                   f"it patches transformers internals and was tested on transformers {feature.tested[0]} to "
                   f"{feature.tested[1]}, not {transformers_version}")
        if problem is None:
            chosen[key] = value
        elif explicit:
            raise DdpEvalError(f"model.{key}={value}: {problem}; set model.{key}="
                               f"{'sdpa' if key == 'vision_attention' else 'false'}")
        else:
            if report:
                log.info("model.%s: not used, %s; the plain path runs", key, problem)
            chosen[key] = "sdpa" if key == "vision_attention" else False
    speed = Speed(**chosen)
    if speed.reuse_prefix and not speed.reuse_vision:
        speed = replace(speed, reuse_prefix=False)
    if speed.decode_graphs and not speed.reuse_prefix:
        if cfg.model.decode_graphs and cfg.is_set("model.decode_graphs"):
            raise DdpEvalError("model.decode_graphs=true needs the shared-prefix decoder, which this run does not use "
                               f"on {device_type} (model.reuse_prefix={cfg.model.reuse_prefix}); set "
                               "model.reuse_prefix=true or model.decode_graphs=false")
        speed = replace(speed, decode_graphs=False)
    return speed
