"""The vision tower's rotary embedding in one GPU kernel, meant to equal transformers' own bit for bit.

transformers' `apply_rotary_pos_emb_vision` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) casts q and k to float32,
builds `rotate_half` with a negation and a concatenation, multiplies, adds and casts back: a dozen
kernels a layer, each reading and writing a (patches x heads x head_dim) float32 tensor of a few
hundred MB for a batch of MMBench-sized images. That is memory traffic, not arithmetic. This Triton
kernel reads q and k once and writes them once, doing the same float32 operations (each product and
the sum rounded on its own: fused multiply-add is off) and the same round-to-nearest-even cast back,
so its output should be the eager one exactly. Triton's CPU interpreter agrees in float16 (tests; its
numpy emulation truncates bfloat16, so bfloat16 needs the GPU); `bench/rotary.py` checks and times it on
a GPU: on an H200 it equals transformers' output bit for bit in bf16 and takes 0.29 ms a layer against 4.0
(bench/RESULTS.md, run 28), so `model.fused_rotary` is on by default with CUDA.

CUDA only; anything it does not take (CPU tensors, other layouts) goes to transformers' function.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable

import torch
from torch import nn

from ddp_eval.models.common.triton_launch import LAUNCH

log = logging.getLogger(__name__)

# The body this kernel reproduces; a transformers release that changes it keeps its own function.
EXPECTED = ("q, k = q.float(), k.float()", "cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()",
            "q_embed = (q * cos) + (rotate_half(q) * sin)", "k_embed = (k * cos) + (rotate_half(k) * sin)",
            "q_embed = q_embed.to(orig_q_dtype)")
BLOCK_HEADS = 16


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def rotary(x_ptr, cos_ptr, sin_ptr, out_ptr, heads, stride_xs, stride_xh, stride_cs, stride_ss, stride_os,
               stride_oh, HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
        token = tl.program_id(0)
        h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        in_half = d < HALF
        mask = (h < heads) & in_half
        x = x_ptr + token * stride_xs + h * stride_xh + d
        x1 = tl.load(x, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x + HALF, mask=mask, other=0.0).to(tl.float32)
        c = cos_ptr + token * stride_cs + d
        s = sin_ptr + token * stride_ss + d
        c1 = tl.load(c, mask=in_half, other=0.0).to(tl.float32)
        c2 = tl.load(c + HALF, mask=in_half, other=0.0).to(tl.float32)
        s1 = tl.load(s, mask=in_half, other=0.0).to(tl.float32)
        s2 = tl.load(s + HALF, mask=in_half, other=0.0).to(tl.float32)
        # rotate_half(x) is (-x2, x1): the first half gets x1*c1 + (-x2)*s1, the second x2*c2 + x1*s2.
        first = x1 * c1 + (-x2) * s1
        second = x2 * c2 + x1 * s2
        out = out_ptr + token * stride_os + h * stride_oh + d
        tl.store(out, first.to(out_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)
        tl.store(out + HALF, second.to(out_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)

    return rotary


_KERNEL: list = []


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    import triton

    tokens, heads, dim = x.shape
    out = torch.empty((tokens, heads, dim), dtype=x.dtype, device=x.device)
    grid = (tokens, triton.cdiv(heads, BLOCK_HEADS))
    with LAUNCH:
        if not _KERNEL:
            _KERNEL.append(_kernel())
        _KERNEL[0][grid](x, cos, sin, out, heads, x.stride(0), x.stride(1), cos.stride(0), sin.stride(0),
                         out.stride(0), out.stride(1), HALF=dim // 2, BLOCK_H=BLOCK_HEADS,
                         BLOCK_D=triton.next_power_of_2(dim // 2), enable_fp_fusion=False)
    return out


@torch.library.custom_op("ddp_eval::vision_rotary", mutates_args=())
def vision_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """(q, k) rotated: (tokens, heads, head_dim) each, cos and sin (tokens, head_dim). A torch op, so that
    compiled vision blocks call it as one opaque kernel."""
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


@vision_rotary.register_fake
def _(q, k, cos, sin):
    return torch.empty_like(q, memory_format=torch.contiguous_format), torch.empty_like(
        k, memory_format=torch.contiguous_format)


def build_ahead(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int) -> None:
    """Compile the kernel for a tower of this shape (q and k views of one qkv projection, cos and sin in
    float32, as transformers passes them) on a few rows, before the model's first batch needs it."""
    qkv = torch.zeros(16, 3, heads, head_dim, device=device, dtype=dtype).permute(1, 0, 2, 3)
    table = torch.zeros(16, head_dim, device=device, dtype=torch.float32)
    vision_rotary(qkv[0], qkv[1], table, table)


def takes(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    """The layouts the kernel serves: CUDA, half precision q/k of (tokens, heads, even head_dim) with
    unit last stride, cos and sin (tokens, head_dim) likewise."""
    if not (q.is_cuda and q.dim() == 3 and k.shape == q.shape and q.dtype in (torch.bfloat16, torch.float16)
            and k.dtype == q.dtype and q.shape[-1] % 2 == 0):
        return False
    table = (q.shape[0], q.shape[2])
    return (cos.shape == table and sin.shape == table and cos.dtype == sin.dtype
            and all(t.stride(-1) == 1 for t in (q, k, cos, sin)) and cos.device == q.device == sin.device)


def fused_version(original: Callable) -> Callable:
    def apply_rotary_pos_emb_vision(q, k, cos, sin):
        if takes(q, k, cos, sin):
            return vision_rotary(q, k, cos, sin)
        return original(q, k, cos, sin)

    apply_rotary_pos_emb_vision.original = original
    return apply_rotary_pos_emb_vision


def kernel_problem(visual: nn.Module) -> str | None:
    """Why a Triton kernel cannot serve this vision tower (not on CUDA, no triton), or None."""
    if not next(visual.parameters()).is_cuda:
        return "the replica is not on a CUDA device"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def use_fused_rotary(visual: nn.Module, on: bool = True) -> str | None:
    """Route the vision tower's rotary embedding through the kernel (`on`) or back to transformers' own;
    why it cannot, or None when done. The function is replaced in the tower's transformers module, which
    every replica of that class in this process shares."""
    module = sys.modules.get(type(visual).__module__)
    original = getattr(module, "apply_rotary_pos_emb_vision", None)
    if original is None:
        return f"{type(visual).__name__}'s module has no apply_rotary_pos_emb_vision"
    if hasattr(original, "original"):  # installed by an earlier load in this process
        if not on:
            module.apply_rotary_pos_emb_vision = original.original
        return None
    if not on:
        return None
    try:
        source = inspect.getsource(original)
    except (OSError, TypeError):
        source = ""
    if not all(line in source for line in EXPECTED):
        return "transformers' apply_rotary_pos_emb_vision is not the one this kernel reproduces"
    if (problem := kernel_problem(visual)) is not None:
        return problem
    module.apply_rotary_pos_emb_vision = fused_version(original)
    log.info("vision rotary embedding: one fused kernel per layer")
    return None
