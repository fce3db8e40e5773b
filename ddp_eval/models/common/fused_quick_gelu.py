"""The vision MLP's QuickGELU in one GPU kernel, meant to equal transformers' own bit for bit.

transformers' `QuickGELUActivation` (Qwen2-VL's vision tower: `hidden_act="quick_gelu"`) computes
`x * sigmoid(1.702 * x)` as three kernels, each reading and writing the MLP's widest tensor (patches x
5,120) in bfloat16: ~0.85 GB in and as much out per kernel for a batch of 16 MMBench-sized images, in each
of 32 layers. This Triton kernel reads x once and writes once, doing what PyTorch's three CUDA kernels
do: each step in float32 (the product with 1.702, then `1 / (1 + exp(-t))` with an IEEE division and
CUDA's accurate exp, then the product with x), each result cast back to x's dtype with
round-to-nearest-even, fused multiply-add off. (libdevice's exp may flush subnormals to zero; that
changes nothing here: exp of a subnormal is 1 either way, and a subnormal exp(-t) vanishes in 1 +
exp(-t).) Triton's CPU interpreter agrees in float16 (a test); `bench/quick_gelu.py` checks bfloat16
and CUDA's exp on a GPU: on an H200 it equals transformers' output bit for bit in bf16 and fp16 and
takes 0.48 ms a layer against 1.41 (bench/RESULTS.md, run 28), so `model.fused_activation` is on by
default with CUDA.

CUDA only; other devices, dtypes and layouts keep transformers' formula.
"""

from __future__ import annotations

import inspect
import logging
import os

import torch
from torch import nn

from ddp_eval.models.common.triton_launch import LAUNCH

log = logging.getLogger(__name__)

EXPECTED = "return input * torch.sigmoid(1.702 * input)"  # the body this kernel reproduces
BLOCK = 2048


def _kernel():
    import triton
    import triton.language as tl
    import triton.language.extra.cuda.libdevice  # noqa: F401  (tl.extra.cuda.libdevice below)

    @triton.jit
    def quick_gelu(x_ptr, out_ptr, n, BLOCK: tl.constexpr, INTERPRET: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        raw = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        x = raw.to(tl.float32)
        kind = out_ptr.dtype.element_ty
        t = (x * 1.702).to(kind, fp_downcast_rounding="rtne").to(tl.float32)  # 1.702 * input
        if INTERPRET:  # Triton's CPU interpreter (tests) has no libdevice
            e = tl.exp(-t)
        else:  # CUDA's accurate expf, as PyTorch's kernel calls it (tl.exp is the fast approximation)
            e = tl.extra.cuda.libdevice.exp(-t)
        s = tl.math.div_rn(1.0, 1.0 + e)  # torch.sigmoid
        s = s.to(kind, fp_downcast_rounding="rtne").to(tl.float32)
        tl.store(out_ptr + offsets, (x * s).to(kind, fp_downcast_rounding="rtne"), mask=mask)

    return quick_gelu


_KERNEL: list = []


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@torch.library.custom_op("ddp_eval::quick_gelu", mutates_args=())
def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 * x) of a contiguous half-precision CUDA tensor, as transformers computes it.
    A torch op, so that compiled vision blocks call it as one opaque kernel."""
    import triton

    out = torch.empty_like(x)
    n = x.numel()
    with LAUNCH:
        if not _KERNEL:
            _KERNEL.append(_kernel())
        _KERNEL[0][(triton.cdiv(n, BLOCK),)](x, out, n, BLOCK=BLOCK, INTERPRET=_interpreted(), enable_fp_fusion=False)
    return out


@quick_gelu.register_fake
def _(x):
    return torch.empty_like(x)


def build_ahead(device: torch.device, dtype: torch.dtype, width: int) -> None:
    """Compile the kernel for an MLP of this width on a few rows, before the first batch needs it."""
    quick_gelu(torch.zeros(16, width, device=device, dtype=dtype))


def takes(x: torch.Tensor) -> bool:
    return x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and x.is_contiguous()


class FusedQuickGELU(nn.Module):
    """Stands in for a QuickGELUActivation: the kernel where it serves, else the same formula."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.original = original

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if takes(input):
            return quick_gelu(input)
        return self.original(input)


def use_fused_quick_gelu(visual: nn.Module, on: bool = True) -> str | None:
    """Swap each vision block's QuickGELU for the kernel (`on`) or back; why it cannot, or None when done."""
    from transformers.activations import QuickGELUActivation

    from ddp_eval.models.common.fused_rotary import kernel_problem

    blocks = [m for m in visual.modules() if isinstance(getattr(m, "act", None), (QuickGELUActivation,
                                                                               FusedQuickGELU))]
    if not on:
        for mlp in blocks:
            if isinstance(mlp.act, FusedQuickGELU):
                mlp.act = mlp.act.original
        return None
    if not blocks:
        return f"{type(visual).__name__}'s MLPs do not use QuickGELU"
    try:
        source = inspect.getsource(QuickGELUActivation.forward)
    except (OSError, TypeError):
        source = ""
    if EXPECTED not in source:
        return "transformers' QuickGELUActivation is not the one this kernel reproduces"
    if (problem := kernel_problem(visual)) is not None:
        return problem
    for mlp in blocks:
        if not isinstance(mlp.act, FusedQuickGELU):
            mlp.act = FusedQuickGELU(mlp.act)
    log.info("vision MLP activation: one fused QuickGELU kernel per layer")
    return None
