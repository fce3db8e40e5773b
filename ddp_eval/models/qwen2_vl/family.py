"""The Qwen2-VL family objects: what the runner asks of a model family, answered for Qwen2-VL and for
Qwen2.5-VL. The two differ only in their prompts, as VLMEvalKit's configs do: Qwen2-VL uses the
wrapper's own prompts (`use_custom_prompt=True`), Qwen2.5-VL the datasets' (`use_custom_prompt=False`).
Qwen3-VL's family (models/qwen3_vl/) is this class with its own patch size, pixels and processor call."""

from __future__ import annotations

import functools

from ddp_eval.config import ModelConfig
from ddp_eval.core.sample import Benchmark, Sample
from ddp_eval.models.base import Feature, ModelFamily, Pixels, Speed
from ddp_eval.tasks.base import Content, Task, prompt_text

# transformers versions every patch below was tested on (5.17 on the GPU, 5.24 on the CPU).
TESTED = ("5.17", "5.24")
# VLMEvalKit's Qwen2-VL wrapper (both families use it) lowers min_pixels for OCRBench alone.
OCRBENCH_MIN_PIXELS = 10 * 10 * 28 * 28


class Qwen2VLFamily(ModelFamily):
    default_pixels = (1280 * 28 * 28, 16384 * 28 * 28)  # VLMEvalKit's min/max pixels for Qwen2-VL
    patch_size = 14  # vision patch side in pixels; images resize to multiples of 2 * 14 (spatial merge 2)
    ocrbench_min_pixels = OCRBENCH_MIN_PIXELS
    processor_resizes = True  # the processor may resize qwen_vl_utils' image again, as in VLMEvalKit's wrapper
    thread_state = ("rope_deltas",)  # generate's rotary offsets after the images, kept from prefill to decode
    features = (
        Feature("reuse_vision", "the vision tower encodes each distinct image of a batch once", TESTED),
        Feature("reuse_prefix", "the prompt start that rows of one image share is prefilled once", TESTED),
        Feature("decode_graphs", "decode steps on static buffers, replayed as CUDA graphs", TESTED),
        Feature("vision_attention", "one packed attention call per vision layer (varlen_attn, cuDNN, Triton, "
                "FlashAttention-4)", TESTED),
        Feature("kv_head_attention", "short queries attend on the key/value heads without copies", TESTED),
        Feature("fused_rotary", "the vision rotary embedding in one kernel (CUDA, Triton)", TESTED),
        Feature("fused_activation", "the vision MLP's QuickGELU in one kernel (CUDA, Triton)", TESTED),
        Feature("compile_vision", "torch.compile of the vision blocks", None),
    )

    def __init__(self, name: str, model_types: tuple[str, ...], custom_prompts: bool) -> None:
        self.name = name
        self.model_types = model_types
        self.custom_prompts = custom_prompts

    def benchmark_pixels(self, benchmark: str) -> tuple[int | None, int | None]:
        return (self.ocrbench_min_pixels, None) if benchmark == "OCRBench" else (None, None)

    def content(self, task: Task, sample: Sample, benchmark: str) -> Content:
        if self.custom_prompts:
            from ddp_eval.models.qwen2_vl.prompt import custom_content

            custom = custom_content(task.prompt_kind, sample, task.rules(benchmark) or None)
            if custom is not None:
                return custom
        return task.content(sample, benchmark)

    def render(self, processor, content: Content) -> str:
        from ddp_eval.models.qwen2_vl.preprocess import chat_text

        return chat_text(processor, content)

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
                          reuse_prefix=speed.reuse_prefix, patch_size=self.patch_size,
                          processor_resizes=self.processor_resizes)

    def costs(self, benchmark: Benchmark, task: Task, pixels: Pixels) -> dict[int, int]:
        from ddp_eval.models.qwen2_vl.costs import row_costs

        def text(sample: Sample) -> str:
            return prompt_text(self.content(task, sample, benchmark.name))

        return row_costs(benchmark, text, pixels.min_pixels, pixels.max_pixels, factor=2 * self.patch_size)

    def kernels_ahead(self, cfg: ModelConfig, device, speed: Speed):
        from ddp_eval.models.qwen2_vl.load import kernels_ahead

        return kernels_ahead(cfg, device, speed)

    def fast_path(self, model, speed: Speed):
        from ddp_eval.models.qwen2_vl.fast import Qwen2VLFastPath

        return Qwen2VLFastPath(model, speed)
