"""The Qwen2-VL family object: what the runner asks of a model family, answered for Qwen2-VL / 2.5-VL."""

from __future__ import annotations

import functools

from ddp_eval.config import ModelConfig
from ddp_eval.core.sample import Benchmark, Sample
from ddp_eval.models.base import Feature, ModelFamily, Pixels, Speed
from ddp_eval.tasks.base import Content, Task, prompt_text

# transformers versions every patch below was tested on (5.17 on the GPU, 5.24 on the CPU).
TESTED = ("5.17", "5.24")


class Qwen2VLFamily(ModelFamily):
    name = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    default_pixels = (1280 * 28 * 28, 16384 * 28 * 28)  # VLMEvalKit's min/max pixels for Qwen2-VL
    features = (
        Feature("reuse_vision", "the vision tower encodes each distinct image of a batch once", TESTED),
        Feature("reuse_prefix", "the prompt start that rows of one image share is prefilled once", TESTED),
        Feature("decode_graphs", "decode steps on static buffers, replayed as CUDA graphs", TESTED),
        Feature("vision_attention", "one packed attention call per vision layer (varlen_attn, FlashAttention-4)",
                TESTED),
        Feature("kv_head_attention", "short queries attend on the key/value heads without copies", TESTED),
        Feature("compile_vision", "torch.compile of the vision blocks", None),
    )

    def content(self, task: Task, sample: Sample, benchmark: str) -> Content:
        from ddp_eval.models.qwen2_vl.prompt import custom_content

        return custom_content(task.prompt_kind, sample) or task.content(sample, benchmark)

    def load_processor(self, cfg: ModelConfig, pixels: Pixels):
        from ddp_eval.models.qwen2_vl.load import load_processor

        return load_processor(cfg, pixels)

    def load_model(self, cfg: ModelConfig, device, speed: Speed):
        from ddp_eval.models.qwen2_vl.load import load_model

        return load_model(cfg, device, speed)

    def preprocessor(self, processor, benchmark: Benchmark, task: Task, speed: Speed, pixels: Pixels):
        from ddp_eval.models.qwen2_vl.preprocess import Preprocess

        return Preprocess(processor, benchmark, functools.partial(self.content, task, benchmark=benchmark.name),
                          task.choices, pixels.min_pixels, pixels.max_pixels, reuse_vision=speed.reuse_vision,
                          reuse_prefix=speed.reuse_prefix)

    def costs(self, benchmark: Benchmark, task: Task, pixels: Pixels) -> dict[int, int]:
        from ddp_eval.models.qwen2_vl.costs import row_costs

        def text(sample: Sample) -> str:
            return prompt_text(self.content(task, sample, benchmark.name))

        return row_costs(benchmark, text, pixels.min_pixels, pixels.max_pixels)

    def fast_path(self, model, speed: Speed):
        from ddp_eval.models.qwen2_vl.fast import Qwen2VLFastPath

        return Qwen2VLFastPath(model, speed)
