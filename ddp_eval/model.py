"""Load one full model replica onto one device, and prove that nothing lives anywhere else.

Loading goes through transformers' Auto classes, so Qwen2-VL and Qwen2.5-VL (and other
image-text-to-text models with the same processor contract) load with no code change. The
device map is always `{"": device}`: the whole replica on this rank's device, never 'auto'.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ddp_eval.config import ModelConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.kv_head_attention import use_kv_head_attention
from ddp_eval.vision_attention import packed_kernel_available, use_packed_vision_attention

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    dtype = _DTYPES[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise DdpEvalError("model.dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return dtype


def check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise DdpEvalError(f"model.path: no model directory at {path}")
    if not (path / "config.json").is_file():
        raise DdpEvalError(f"model.path: {path} has no config.json; is it a saved transformers model?")


def load_processor(cfg: ModelConfig):
    from transformers import AutoProcessor

    path = Path(cfg.path)
    check_model_dir(path)
    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DdpEvalError(f"model.path: cannot load a processor from {path} ({err})") from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise DdpEvalError(f"model.path: {path} has no image processor + tokenizer (got {type(processor).__name__})")
    # Batched generation needs left padding so every row's last prompt token is at the end.
    processor.tokenizer.padding_side = "left"
    # qwen_vl_utils already resized each image within [min_pixels, max_pixels]; the processor's
    # own bounds must not resize it again.
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    for name, value in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)
    return processor


def load_model(cfg: ModelConfig, device: torch.device):
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per rank for loading weights is noise; ours shows rows
    path = Path(cfg.path)
    check_model_dir(path)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path,
            dtype=resolve_dtype(cfg.dtype, device),
            device_map={"": device},
            attn_implementation=cfg.attn_implementation,
        )
    except (OSError, ValueError, KeyError) as err:
        raise DdpEvalError(f"model.path: cannot load the model from {path} ({err})") from None
    model.eval()
    check_model_device(model, device)
    if cfg.vision_attention in ("varlen", "fa4"):
        use_packed_vision_attention(model, cfg.vision_attention)
    elif cfg.vision_attention == "auto" and packed_kernel_available(model):
        use_packed_vision_attention(model)
    if cfg.kv_head_attention and not use_kv_head_attention(model):
        log.info("model.kv_head_attention: not used (needs attn_implementation=sdpa and grouped key/value heads)")
    if cfg.compile_vision:
        compile_vision_blocks(model)
    return model


def compile_vision_blocks(model: torch.nn.Module) -> None:
    """torch.compile each block of the vision tower (dynamic shapes: images differ in size)."""
    visual = getattr(model, "visual", None) or getattr(getattr(model, "model", None), "visual", None)
    blocks = getattr(visual, "blocks", None)
    if blocks is None:
        raise DdpEvalError("model.compile_vision: this model has no vision tower with blocks to compile")
    for block in blocks:
        block.compile(dynamic=True)
    log.info("compiling %d vision blocks on first use", len(blocks))


def warm_up_device(device: torch.device) -> threading.Thread | None:
    """Create the CUDA context and cuBLAS handle in the background while the benchmark loads
    (a few seconds of a job's start on a GPU); join the thread before loading the model."""
    if device.type != "cuda":
        return None

    def warm() -> None:
        with torch.cuda.device(device):
            a = torch.ones(64, 64, device=device, dtype=torch.bfloat16)
            (a @ a).sum().item()

    thread = threading.Thread(target=warm, name="ddp_eval-cuda-warmup", daemon=True)
    thread.start()
    return thread


def check_model_device(model: torch.nn.Module, device: torch.device) -> None:
    """Every parameter and buffer on `device`, else an error naming the first stray tensor."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if not _same_device(tensor.device, device):
                raise DdpEvalError(
                    f"{kind} {name} is on {tensor.device}, expected {device}; the replica must sit on "
                    "this rank's device alone (check model loading / device_map)"
                )


def check_inputs_device(inputs: Mapping[str, Any], device: torch.device) -> None:
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and not _same_device(value.device, device):
            raise DdpEvalError(f"input tensor {name} is on {value.device}, expected {device}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        return (a.index or 0) == (b.index or 0)
    return True
