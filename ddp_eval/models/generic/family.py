"""The generic family object: what the runner asks of a model family, answered for any image-text-to-text
checkpoint through transformers' own processor and `generate`, with none of the speed features."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from ddp_eval.config import Config, ModelConfig
from ddp_eval.core.sample import Benchmark, Sample
from ddp_eval.models.base import ModelFamily, Pixels, Speed
from ddp_eval.tasks.base import Content, Task, TaskSettings, prompt_text

log = logging.getLogger(__name__)

PLAIN_PATH = ("the speed features patch one family's modelling code in transformers (vision tower, attention, "
              "decode loop) and are tested per family; this family serves model types whose internals ddp_eval "
              "does not patch, so it runs transformers' own batched generate")


class GenericFamily(ModelFamily):
    """A checkpoint of `model_type` at `model_dir` (checked by `family_for_checkpoint`)."""

    name = "generic"
    features = ()
    default_pixels = (0, 0)  # the processor resizes; ddp_eval's pixel bounds do not apply
    plain_path = PLAIN_PATH

    def __init__(self, model_dir: Path, model_type: str) -> None:
        self.model_dir = model_dir
        self.model_types = (model_type,)
        self._cost_processor = None  # loaded once, for the token costs of the plan

    def pixels(self, cfg: Config, settings: TaskSettings, benchmark: str = "") -> Pixels:
        for key in ("min_pixels", "max_pixels"):
            if cfg.is_set(f"model.{key}") and getattr(cfg.model, key) is not None:
                log.info("model.%s: not used by the generic family (%s): its processor sizes images its own way",
                         key, self.model_types[0])
        return Pixels(0, 0)

    def render(self, processor, content: Content) -> str:
        from ddp_eval.models.generic.preprocess import chat_text

        return chat_text(processor, content)

    def load_processor(self, cfg: ModelConfig, pixels: Pixels):
        from ddp_eval.models.loading import load_auto_processor

        return load_auto_processor(cfg)

    def load_model(self, cfg: ModelConfig, device, speed: Speed):
        from ddp_eval.models.loading import load_pretrained

        log.info("model family generic (%s): no speed features, the plain path: %s", self.model_types[0],
                 self.plain_path)
        return load_pretrained(cfg, device)

    def preprocessor(self, processor, benchmark: Benchmark, task: Task, speed: Speed, pixels: Pixels):
        from ddp_eval.models.generic.preprocess import Preprocess

        return Preprocess(processor, benchmark, functools.partial(self.content, task, benchmark=benchmark.name),
                          task.choices)

    def costs(self, benchmark: Benchmark, task: Task, pixels: Pixels) -> dict[int, int]:
        from ddp_eval.models.generic.costs import row_costs

        def text(sample: Sample) -> str:
            return prompt_text(self.content(task, sample, benchmark.name))

        if self._cost_processor is None:
            self._cost_processor = self.load_processor(ModelConfig(path=str(self.model_dir)), Pixels(0, 0))
        return row_costs(benchmark, text, self._cost_processor, self.model_dir)


def family_for_checkpoint(model_dir: Path, model_type: str) -> GenericFamily:
    """The generic family for this checkpoint, once its files show it can run (errors name what is missing)."""
    from ddp_eval.models.generic.checkpoint import check_checkpoint

    check_checkpoint(model_dir, model_type)
    return GenericFamily(model_dir, model_type)
