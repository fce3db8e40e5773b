"""Qwen2-VL / Qwen2.5-VL replica and processor: the shared loading, then this family's patches.

The processor keeps the pixel bounds of the run (qwen_vl_utils has already resized each image within
them, and the processor must not resize it again). The model gets, as `Speed` says: the packed
vision attention, the fused rotary embedding of the vision tower (CUDA), attention on the key/value
heads for short queries, compiled vision blocks.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable

import torch

from ddp_eval.config import ModelConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.base import Pixels, Speed
from ddp_eval.models.common.fused_quick_gelu import use_fused_quick_gelu
from ddp_eval.models.common.fused_rotary import use_fused_rotary
from ddp_eval.models.common.kv_head_attention import use_kv_head_attention
from ddp_eval.models.common.vision_attention import packed_kernel_available, use_packed_vision_attention
from ddp_eval.models.loading import load_auto_processor, load_pretrained
from ddp_eval.models.qwen2_vl.vision_reuse import find_vision_tower

log = logging.getLogger(__name__)


def load_processor(cfg: ModelConfig, pixels: Pixels):
    processor = load_auto_processor(cfg)
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": pixels.min_pixels, "longest_edge": pixels.max_pixels}
    for name, value in (("min_pixels", pixels.min_pixels), ("max_pixels", pixels.max_pixels)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)
    return processor


def kernels_ahead(cfg: ModelConfig, device: torch.device, speed: Speed) -> list[Callable[[], None]]:
    """The Triton kernels `load_model` switches on for this checkpoint, as calls that compile them at its
    vision tower's shapes (its config, with transformers' defaults for keys the file leaves out): the rotary
    embedding, QuickGELU (Qwen2-VL's MLP) and the attention where `auto` or `triton` picks it."""
    from transformers import AutoConfig

    from ddp_eval.models.common import fused_quick_gelu, fused_rotary, triton_attention
    from ddp_eval.models.common.vision_attention import auto_kernel

    config = AutoConfig.from_pretrained(cfg.path)
    name = cfg.dtype if cfg.dtype != "auto" else str(getattr(config, "dtype", None)).removeprefix("torch.")
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)
    vision = config.vision_config
    heads = vision.num_heads
    width = vision.embed_dim if hasattr(vision, "embed_dim") else vision.hidden_size  # Qwen2-VL / 2.5-VL, 3-VL
    if device.type != "cuda" or dtype is None or width % heads:
        return []
    head_dim, calls = width // heads, []
    if speed.fused_rotary:
        calls.append(functools.partial(fused_rotary.build_ahead, device, dtype, heads, head_dim))
    if speed.fused_activation and vision.hidden_act == "quick_gelu" and hasattr(vision, "mlp_ratio"):
        calls.append(functools.partial(fused_quick_gelu.build_ahead, device, dtype, int(width * vision.mlp_ratio)))
    auto = speed.vision_attention == "auto"
    if (auto_kernel(device, head_dim)[0] if auto else speed.vision_attention) == "triton" and varlen_available():
        calls.append(functools.partial(triton_attention.build_ahead, device, dtype, heads, head_dim, fallback=auto))
    return calls


def varlen_available() -> bool:
    """torch has varlen_attn (2.9+): the packed vision attention, which the Triton kernel serves, can run."""
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def load_model(cfg: ModelConfig, device: torch.device, speed: Speed):
    model = load_pretrained(cfg, device)
    if speed.vision_attention != "sdpa":
        visual = find_vision_tower(model, "model.vision_attention=sdpa")
        if speed.vision_attention in ("varlen", "cudnn", "fa4", "triton"):
            use_packed_vision_attention(visual, speed.vision_attention)
        elif packed_kernel_available(visual):  # auto: Triton on Hopper, varlen_attn on other GPUs
            use_packed_vision_attention(visual, "auto")
    on = speed.fused_rotary and device.type == "cuda"
    if (problem := use_fused_rotary(find_vision_tower(model), on)) and on:
        log.info("model.fused_rotary: not used (%s)", problem)
    on = speed.fused_activation and device.type == "cuda"
    if (problem := use_fused_quick_gelu(find_vision_tower(model), on)) and on:
        log.info("model.fused_activation: not used (%s)", problem)
    if speed.kv_head_attention and not use_kv_head_attention(model):
        log.info("model.kv_head_attention: not used (needs attn_implementation=sdpa and grouped key/value heads)")
    if speed.compile_vision:
        compile_vision_blocks(model)
    return model


def compile_vision_blocks(model: torch.nn.Module) -> None:
    """torch.compile each block of the vision tower (dynamic shapes: images differ in size)."""
    blocks = getattr(find_vision_tower(model, "model.compile_vision=false"), "blocks", None)
    if blocks is None:
        raise DdpEvalError("model.compile_vision: this model has no vision tower with blocks to compile")
    for block in blocks:
        block.compile(dynamic=True)
    log.info("compiling %d vision blocks on first use", len(blocks))
