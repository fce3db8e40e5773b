"""Load one full transformers replica onto one device, and prove that nothing lives anywhere else.

Shared by the model families: the Auto classes, `from_pretrained` on a local directory, and a device
map that is always `{"": device}`: the whole replica on this rank's device, never 'auto'.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ddp_eval.config import ModelConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.registry import check_model_dir

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    dtype = _DTYPES[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise DdpEvalError("model.dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return dtype


def load_auto_processor(cfg: ModelConfig):
    """The checkpoint's processor (image processor + tokenizer), left-padding for batched generation."""
    from transformers import AutoProcessor

    path = Path(cfg.path)
    check_model_dir(path)
    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DdpEvalError(f"model.path: cannot load a processor from {path} ({err})") from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise DdpEvalError(f"model.path: {path} has no image processor + tokenizer (got {type(processor).__name__})")
    # Without its files transformers builds a tokenizer of its special tokens alone; generate fails much later.
    if len(processor.tokenizer) <= len(set(processor.tokenizer.all_special_tokens)):
        raise DdpEvalError(f"model.path: {path} has no tokenizer files (tokenizer.json, or vocab.json and "
                           "merges.txt, with tokenizer_config.json): its tokenizer has no vocabulary")
    # Batched generation needs left padding so every row's last prompt token is at the end.
    processor.tokenizer.padding_side = "left"
    return processor


def load_pretrained(cfg: ModelConfig, device: torch.device):
    """`AutoModelForImageTextToText.from_pretrained` onto `device` alone, in eval mode, checked."""
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
    except ImportError as err:  # an attention implementation whose package is missing (flash_attention_2)
        raise DdpEvalError(f"model.attn_implementation={cfg.attn_implementation}: {err}") from None
    except (OSError, ValueError, KeyError) as err:
        raise DdpEvalError(f"model.path: cannot load the model from {path} ({err})") from None
    except Exception as err:
        if type(err).__name__ != "SafetensorError":
            raise
        raise DdpEvalError(f"model.path: the weights in {path} cannot be read ({err}); the .safetensors files are "
                           "damaged or cut short: copy or download them again") from None
    model.eval()
    check_model_device(model, device)
    return model


def warm_up_device(device: torch.device) -> threading.Thread | None:
    """Create the CUDA context and cuBLAS handle in the background while the benchmark loads
    (a few seconds of a job's start on a GPU), and import the packed attention module the first batch
    needs (~2 s of torch imports); join the thread before loading the model."""
    if device.type != "cuda":
        return None

    def warm() -> None:
        with torch.cuda.device(device):
            a = torch.ones(64, 64, device=device, dtype=torch.bfloat16)
            (a @ a).sum().item()
        with contextlib.suppress(ImportError):  # torch < 2.9: the family says so when it is asked for
            importlib.import_module("torch.nn.attention.varlen")

    thread = threading.Thread(target=warm, name="ddp_eval-cuda-warmup", daemon=True)
    thread.start()
    return thread


def build_ahead(plan: Callable[[], list[Callable[[], None]]], device: torch.device) -> threading.Thread:
    """In a thread, while the benchmark loads and the model is read: `plan()` (ModelFamily.kernels_ahead: it
    reads the checkpoint's config) and the calls it returns, which compile a family's Triton kernels. On a
    machine's first run they compile for seconds, and the first batch would wait for them (bench/RESULTS.md,
    run 39). Join the thread before the model's first forward. A step that fails is left to the batch that
    needs the kernel, which reports it (or falls back) as it would have without this."""

    def build() -> None:
        start = time.perf_counter()
        try:
            calls = plan()
            if device.type == "cuda":
                torch.cuda.set_device(device)  # Triton launches on the thread's current device
            with torch.inference_mode():
                for call in calls:
                    call()
        except Exception as err:  # noqa: BLE001 (see the docstring)
            log.debug("kernels compiled ahead: stopped on %s: %s", type(err).__name__, err)
            return
        if calls:
            log.info("vision kernels compiled ahead in %.1f s, beside the start-up", time.perf_counter() - start)

    thread = threading.Thread(target=build, name="ddp_eval-kernels-ahead", daemon=True)
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
