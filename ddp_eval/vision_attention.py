"""One attention call per vision layer for all images of a batch (variable-length packing).

transformers' Qwen2-VL vision tower runs sdpa once per image per layer (32 layers x ~30 images in a
batch of MMBench rows), after a host sync for the split sizes in every layer. Its flash-attention
branch instead hands the images' boundaries (`cu_seqlens`) to one kernel; transformers takes that
branch for any attention implementation whose name contains "flash". This registers one backed by
PyTorch's own `varlen_attn` (the FlashAttention-2 / cuDNN kernels that ship with torch), so no extra
package is needed, and selects it for the vision tower only.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable

import torch
from torch import nn

from ddp_eval.errors import DdpEvalError
from ddp_eval.vision_reuse import find_vision_tower

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
        out = call(q, k, v, cu_seq_lens_q.to(torch.int32), cu_seq_lens_k.to(torch.int32), _length(max_length_q),
                   _length(max_length_k), scaling)
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


def packed_kernel_available(model: nn.Module) -> bool:
    """True where PyTorch's varlen kernel serves this model's vision tower: CUDA, bf16/fp16, torch >= 2.9."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        visual = find_vision_tower(model, "model.vision_attention=sdpa")
    except (ImportError, DdpEvalError):
        return False
    weight = next(visual.parameters())
    return weight.device.type == "cuda" and weight.dtype in (torch.bfloat16, torch.float16)


def use_packed_vision_attention(model: nn.Module) -> None:
    """Switch the vision tower to `packed_attention`; the language model keeps its own implementation."""
    from transformers import AttentionInterface

    visual = find_vision_tower(model, "model.vision_attention=sdpa")
    device, dtype = next(visual.parameters()).device, next(visual.parameters()).dtype
    attention = packed_attention
    if device.type == "cuda":
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        except ImportError:
            raise DdpEvalError(f"model.vision_attention=varlen needs torch.nn.attention.varlen (torch >= 2.9); "
                               f"this is torch {torch.__version__}; use model.vision_attention=sdpa") from None
        if dtype not in (torch.bfloat16, torch.float16):
            raise DdpEvalError(f"model.vision_attention=varlen needs model.dtype bfloat16 or float16 on CUDA, "
                               f"got {dtype}; use model.vision_attention=sdpa")
        attn, (call, takes_scale) = visual.blocks[0].attn, varlen_call()
        if not takes_scale and attn.head_dim**-0.5 != attn.scaling:
            raise DdpEvalError("model.vision_attention=varlen: this torch's varlen_attn has no scale argument and "
                               "the model's attention scale is not 1/sqrt(head_dim); use model.vision_attention=sdpa")
        attention = functools.partial(packed_attention, varlen=call)
    AttentionInterface.register(NAME, attention)
    visual.config._attn_implementation = NAME
    log.info("vision attention: one packed call per layer (%s)", "varlen_attn" if device.type == "cuda"
             else "per image on CPU")
