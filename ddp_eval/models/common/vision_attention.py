"""One attention call per vision layer for all images of a batch (variable-length packing).

A transformers vision tower that packs a batch's images into one sequence with boundaries (Qwen2-VL's
does) runs sdpa once per image per layer (32 layers x ~30 images in a batch), after a host sync for
the split sizes in every layer. Its flash-attention
branch instead hands the images' boundaries (`cu_seqlens`) to one kernel; transformers takes that
branch for any attention implementation whose name contains "flash". This registers one backed by
PyTorch's own `varlen_attn` (the FlashAttention-2 kernels that ship with torch, no extra package), by
this package's Triton kernel (`model.vision_attention=triton`; what `auto` runs on Hopper:
triton_attention.py), or by
cuDNN's attention image by image (`model.vision_attention=cudnn`: no extra package; faster than
varlen_attn on Hopper where images come in a few sizes, far slower where sizes vary, since cuDNN builds
a plan for every new sequence length: bench/RESULTS.md, run 27), or by FlashAttention-4
(`model.vision_attention=fa4`: the `flash-attn-4` package's CuTe DSL kernels for Hopper and Blackwell),
and selects it for the vision tower only. The model family finds its tower and hands it in.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import os
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ddp_eval.errors import DdpEvalError

log = logging.getLogger(__name__)

NAME = "ddp_eval_flash_varlen"  # "flash" in the name selects transformers' cu_seqlens branch


def packed_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask=None, scaling: float | None = None, dropout: float = 0.0,
                     cu_seq_lens_q: torch.Tensor | None = None, cu_seq_lens_k: torch.Tensor | None = None,
                     max_length_q=None, max_length_k=None, is_causal: bool = False, varlen=None, **kwargs):
    """transformers' attention-function interface: (1, heads, tokens, dim) in, (1, tokens, heads, dim) out.

    Packed when called with sequence boundaries on CUDA; otherwise (CPU, or a caller that passes one
    sequence at a time) the same attention with sdpa, sequence by sequence. `varlen` is the kernel
    call (bound at registration, so that compiled code does not inspect torch's signature).
    """
    if cu_seq_lens_q is not None and query.is_cuda and attention_mask is None and not is_causal:
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
        call = varlen or varlen_call()[0]
        cu_q = cu_seq_lens_q.to(torch.int32)  # one tensor where the caller passed one (self-attention)
        cu_k = cu_q if cu_seq_lens_k is cu_seq_lens_q else cu_seq_lens_k.to(torch.int32)
        out = call(q, k, v, cu_q, cu_k, _length(max_length_q), _length(max_length_k), scaling)
        return out.unsqueeze(0), None
    if cu_seq_lens_q is None:
        bounds = [0, query.shape[2]]
    elif attention_mask is None:
        bounds = cu_seq_lens_q.tolist()
    else:
        raise DdpEvalError(f"model.vision_attention=varlen: {type(module).__name__} passed both sequence boundaries "
                           "and a mask, which this attention does not combine; use model.vision_attention=sdpa")
    out = torch.cat([
        nn.functional.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b],
                                                   attn_mask=attention_mask, is_causal=is_causal, scale=scaling)
        for a, b in zip(bounds[:-1], bounds[1:])
    ], dim=2)
    return out.transpose(1, 2), None


def _length(value) -> int:
    # Under torch.compile the length arrives symbolic; int() would pin the compiled block to one value
    # and recompile for every other (the recompile limit then sends the rest back to eager).
    return value if isinstance(value, (int, torch.SymInt)) else int(value)


@functools.cache
def varlen_call() -> tuple[Callable, bool]:
    """torch's varlen_attn as f(q, k, v, cu_q, cu_k, max_q, max_k, scale), and whether it honours the
    scale: older torch has no scale argument and always uses 1/sqrt(head_dim)."""
    from torch.nn.attention.varlen import varlen_attn

    takes_scale = "scale" in inspect.signature(varlen_attn).parameters

    def call(q, k, v, cu_q, cu_k, max_q, max_k, scale):
        if takes_scale:
            return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale)
        return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k)

    return call, takes_scale


@torch.library.custom_op("ddp_eval::fa4_varlen", mutates_args=())
def fa4_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
               max_q: int, max_k: int, scale: float | None) -> torch.Tensor:
    """FlashAttention-4's varlen forward as a torch op, so that compiled vision blocks call it as one
    opaque kernel instead of tracing into the CuTe DSL's Python."""
    from flash_attn.cute import flash_attn_varlen_func

    out = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q,
                                 max_seqlen_k=max_k, softmax_scale=scale)
    return out[0] if isinstance(out, tuple) else out  # some releases also return the log-sum-exp


@fa4_varlen.register_fake
def _(q, k, v, cu_q, cu_k, max_q, max_k, scale):
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


CUDNN_MAX_SEGMENTS = 64  # beyond this (windowed attention: ~100 windows an image) one varlen call is faster


@torch.library.custom_op("ddp_eval::cudnn_segments", mutates_args=())
def cudnn_segments(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                   max_q: int, max_k: int, scale: float | None) -> torch.Tensor:
    """Attention within each packed sequence, (tokens, heads, dim) in and out: cuDNN's kernel once per
    sequence, or torch's varlen_attn in one call where the sequences are many (the split sizes cost one
    host sync per layer). A torch op, so that compiled vision blocks call it as one opaque kernel."""
    bounds = cu_q.tolist()
    if len(bounds) - 1 > CUDNN_MAX_SEGMENTS or not torch.equal(cu_q, cu_k):
        return varlen_call()[0](q, k, v, cu_q, cu_k, max_q, max_k, scale)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        pieces = [nn.functional.scaled_dot_product_attention(
            *(t[a:b].transpose(0, 1).unsqueeze(0) for t in (q, k, v)), scale=scale)[0].transpose(0, 1)
            for a, b in zip(bounds[:-1], bounds[1:])]
    return torch.cat(pieces)


@cudnn_segments.register_fake
def _(q, k, v, cu_q, cu_k, max_q, max_k, scale):
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def cudnn_problem(device: torch.device, head_dim: int, dtype: torch.dtype) -> str | None:
    """Why cuDNN's attention cannot serve this tower on `device`, from one small call; None if it can."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        q = torch.zeros(1, 2, 128, head_dim, device=device, dtype=dtype)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            nn.functional.scaled_dot_product_attention(q, q, q)
    except RuntimeError as err:
        return str(err).strip().splitlines()[0][:200]
    return None


def fa4_problem(device: torch.device | None = None) -> str | None:
    """Why model.vision_attention=fa4 cannot run on `device` (default: every visible GPU), or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    devices = [device] if device is not None else range(torch.cuda.device_count())
    capabilities = sorted({torch.cuda.get_device_capability(d) for d in devices})
    if any(major not in (9, 10) for major, _ in capabilities):
        return ("FlashAttention-4 runs on Hopper and Blackwell GPUs (compute capability 9.x, 10.x), not "
                + ", ".join(f"{major}.{minor}" for major, minor in capabilities))
    try:
        found = importlib.util.find_spec("flash_attn.cute") is not None
    except ImportError:  # a flash_attn package without the cute kernels
        found = False
    return None if found else "the flash-attn-4 package is not installed (pip install flash-attn-4)"


def fa4_call(device: torch.device) -> Callable:
    """FlashAttention-4's varlen kernel as f(q, k, v, cu_q, cu_k, max_q, max_k, scale); a clear error
    where it cannot run (not a Hopper / Blackwell GPU, package missing or broken)."""
    problem = fa4_problem(device)
    if problem is None:
        # FlashAttention-4 compiles its kernel on first use (~4 s per process on an H100); its own
        # on-disk cache, keyed by its sources and versions, keeps that to the first process on a
        # machine. It reads the switch when it is imported; a value the user set is left as it is.
        os.environ.setdefault("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED", "1")
        try:
            import flash_attn.cute  # noqa: F401  (a broken install fails here, not in the first batch)
        except ImportError as err:
            problem = f"flash-attn-4 does not import ({err})"
    if problem is not None:
        raise DdpEvalError(f"model.vision_attention=fa4: {problem}; use model.vision_attention=varlen")
    # flash-attn-4 4.0.0b36 passes an argument the CuTe DSL only warns about when compiling its kernel
    # (seen with nvidia-cutlass-dsl 4.8.1); the kernel is correct, the warning is noise in every log.
    warnings.filterwarnings("ignore", message=r"Argument aux_data .* cannot be converted to a JitArgument",
                            category=UserWarning)
    return fa4_varlen


def triton_problem() -> str | None:
    """Why model.vision_attention=triton cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed"
    old = sorted({torch.cuda.get_device_capability(d) for d in range(torch.cuda.device_count())})[0]
    if old < (8, 0):  # tl.dot in bfloat16
        return f"it needs compute capability 8.0 or newer, not {old[0]}.{old[1]}"
    return None


def triton_call(visual: nn.Module, fallback: bool = False) -> Callable:
    """This package's Triton kernel (triton_attention.py) as f(q, k, v, cu_q, cu_k, max_q, max_k, scale);
    a clear error where it cannot serve this tower. `fallback`: varlen_attn where Triton fails to build it."""
    from ddp_eval.models.common.triton_attention import split_head_dim, triton_varlen, triton_varlen_auto

    head_dim = visual.blocks[0].attn.head_dim
    if split_head_dim(head_dim) is None:
        raise DdpEvalError(f"model.vision_attention=triton: the vision tower's head dim {head_dim} is over 256; "
                           "use model.vision_attention=varlen")
    if (problem := triton_problem()) is not None:
        raise DdpEvalError(f"model.vision_attention=triton: {problem}; use model.vision_attention=varlen")
    _checked_varlen(visual, "triton")  # windowed layers (short sequences) keep varlen_attn
    return triton_varlen_auto if fallback else triton_varlen


def auto_kernel(device: torch.device, head_dim: int) -> tuple[str, str | None]:
    """The packed kernel `model.vision_attention=auto` runs on CUDA, and why not the Triton one on a Hopper GPU
    (None where it runs, or where the GPU is no Hopper): this package's Triton kernel on Hopper (compute
    capability 9.x, where it was measured: +11-15% rows/s on MMBench, bench/RESULTS.md runs 38-39) at the
    head dims measured there, torch's varlen_attn elsewhere."""
    from ddp_eval.models.common.triton_attention import MEASURED_HEAD_DIMS

    if device.type != "cuda" or torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] != 9:
        return "varlen", None  # ROCm's 9.x is not Hopper
    if (problem := triton_problem()) is not None:
        return "varlen", problem
    if head_dim not in MEASURED_HEAD_DIMS:
        return "varlen", (f"the Triton kernel is measured at head dims {', '.join(map(str, MEASURED_HEAD_DIMS))}, "
                          f"not this tower's {head_dim} (model.vision_attention=triton asks for it)")
    return "triton", None


def packed_kernel_available(visual: nn.Module) -> bool:
    """True where PyTorch's varlen kernel serves this vision tower: CUDA, bf16/fp16, torch >= 2.9."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    weight = next(visual.parameters())
    return weight.device.type == "cuda" and weight.dtype in (torch.bfloat16, torch.float16)


def use_packed_vision_attention(visual: nn.Module, kernel: str = "varlen") -> None:
    """Switch the vision tower to `packed_attention` with torch's varlen kernel ("varlen"), cuDNN's
    ("cudnn"), this package's Triton kernel ("triton"), FlashAttention-4's ("fa4") or what `auto_kernel`
    picks ("auto"); the language model keeps its own implementation."""
    from transformers import AttentionInterface

    device, dtype = next(visual.parameters()).device, next(visual.parameters()).dtype
    attention, auto = packed_attention, kernel == "auto"
    if auto:
        kernel, why = auto_kernel(device, visual.blocks[0].attn.head_dim)
        if why:
            log.info("vision attention: auto keeps varlen_attn on this Hopper GPU: %s", why)
    if kernel in ("fa4", "cudnn", "triton") and device.type != "cuda":
        raise DdpEvalError(f"model.vision_attention={kernel} runs CUDA kernels; this replica is on {device}. "
                           "Use model.vision_attention=varlen or sdpa")
    if device.type == "cuda" and kernel == "fa4":
        _check_dtype(dtype, kernel)
        attention = functools.partial(packed_attention, varlen=fa4_call(device))
    elif kernel == "triton":
        _check_dtype(dtype, kernel)
        attention = functools.partial(packed_attention, varlen=triton_call(visual, fallback=auto))
    elif device.type == "cuda":
        call = _checked_varlen(visual, kernel)  # cudnn falls back to it for many short sequences
        if kernel == "cudnn":
            problem = cudnn_problem(device, visual.blocks[0].attn.head_dim, dtype)
            if problem is not None:
                raise DdpEvalError(f"model.vision_attention=cudnn: cuDNN's attention does not run here ({problem}); "
                                   "use model.vision_attention=varlen")
            call = cudnn_segments
        attention = functools.partial(packed_attention, varlen=call)
    AttentionInterface.register(NAME, attention)
    visual.config._attn_implementation = NAME
    log.info("vision attention: one packed call per layer (%s)", "per image on CPU" if device.type != "cuda"
             else "FlashAttention-4" if kernel == "fa4" else "cuDNN, image by image" if kernel == "cudnn"
             else "Triton" + (", auto on Hopper" if auto else "") if kernel == "triton" else "varlen_attn")


def _checked_varlen(visual: nn.Module, kernel: str) -> Callable:
    """torch's varlen_attn call for this tower (`kernel` names the setting in errors)."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        raise DdpEvalError(f"model.vision_attention={kernel} needs torch.nn.attention.varlen (torch >= 2.9); "
                           f"this is torch {torch.__version__}; use model.vision_attention=sdpa") from None
    _check_dtype(next(visual.parameters()).dtype, kernel)
    attn, (call, takes_scale) = visual.blocks[0].attn, varlen_call()
    if not takes_scale and attn.head_dim**-0.5 != attn.scaling:
        raise DdpEvalError(f"model.vision_attention={kernel}: this torch's varlen_attn has no scale argument and "
                           "the model's attention scale is not 1/sqrt(head_dim); use model.vision_attention=sdpa")
    return call


def _check_dtype(dtype: torch.dtype, kernel: str) -> None:
    if dtype not in (torch.bfloat16, torch.float16):
        raise DdpEvalError(f"model.vision_attention={kernel} needs model.dtype bfloat16 or float16 on CUDA, "
                           f"got {dtype}; use model.vision_attention=sdpa")
