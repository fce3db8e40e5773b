"""The vision tower's packed attention as one Triton kernel (`model.vision_attention=triton`; `auto` on Hopper).

torch's `varlen_attn` runs FlashAttention-2's kernels, written for Ampere: on Hopper they do not use its
warpgroup matrix instructions, and a head dim of 80 (Qwen2-VL's and Qwen2.5-VL's vision towers) runs in
the kernel built for 96. This kernel is FlashAttention's forward pass for packed, non-causal sequences
(each image attends to itself), written in Triton, which compiles `tl.dot` to Hopper's instructions.

The arithmetic is FlashAttention's: scores in float32, the running maximum and sum in float32, the
probabilities cast to the inputs' dtype for the product with V, one division at the end. Its results
differ from varlen_attn's by rounding only (bench/attention.py compares both, and a float32 reference).

A head dim that is not a power of two is covered by two column tiles (80 = 64 + 16, the second's V tile
overlapping the first: see `attend`) or by one padded tile (80 in 128, the padding loaded as zeros).
Measured on an H100 (bench/RESULTS.md, run 38; MMBench shapes, one layer): the split tiling with TMA
loads 5.70 ms, the padded tile 7.17, varlen_attn 8.33; over MMBench's 4,300 rows +15% rows/s, 4,297 of
the 4,300 bf16 predictions the same as with varlen_attn; at head dim 64 (Qwen3-VL-2B's and 4B's towers;
run 40) 4.10 ms against 5.62. So `auto` runs it on Hopper (compute capability 9.x) at those head dims and
falls back to varlen_attn, with a warning, where Triton cannot build it; other GPUs keep varlen_attn (not
measured there). Its kernels are compiled in a thread beside the start-up (`build_ahead`), not in the
first batch.

CUDA (or Triton's CPU interpreter, for tests) only; `packed_attention` calls it through the same
interface as varlen_attn.
"""

from __future__ import annotations

import logging
import math
import threading

import torch

from ddp_eval.models.common.triton_launch import LAUNCH

log = logging.getLogger(__name__)

# (BLOCK_M, BLOCK_N, num_warps, num_stages, tensor descriptors (Hopper's TMA loads), K loaded transposed,
# the second column tile's least width, 0 for one padded tile): the fastest of the nine tilings of run 38
# (H100), all of them right there.
CONFIG = (128, 64, 4, 3, True, False, 16)
SHORTEST = 256  # below this longest sequence (windowed attention) varlen_attn's tiles fit better
# Head dims whose CONFIG tiling was checked and timed on a GPU, where `auto` runs the kernel: 80 (Qwen2-VL's and
# Qwen2.5-VL's towers; runs 38-39: 5.6-5.7 ms a layer against varlen_attn's 8.1-8.3) and 64 (Qwen3-VL-2B's and
# 4B's; run 40: 4.10 against 5.62). Others (the larger Qwen3-VL towers' 72) take it by name only until
# bench/attention.py --head-dim has measured them.
MEASURED_HEAD_DIMS = (64, 80)


def split_head_dim(dim: int, least: int = 16) -> tuple[int, int] | None:
    """Two column tiles covering the head dim, powers of two as tl.dot takes them: the largest power of
    two that fits, then the rest rounded up to a power of two of at least `least` (0 if nothing is left;
    `least` 0: one tile, the head dim rounded up to a power of two); None beyond 256 (the tiles would not
    fit in registers)."""
    if dim > 256:
        return None
    if least == 0:  # one tile, padded
        return max(16, 1 << (dim - 1).bit_length()), 0
    first = max(16, 1 << (dim.bit_length() - 1))
    rest = dim - first
    return (first, 0) if rest <= 0 else (first, max(least, 1 << (rest - 1).bit_length()))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, longest: int,
           scale: float | None, config: tuple = CONFIG) -> torch.Tensor:
    """Attention within each packed sequence: (tokens, heads, dim) in (any strides, the last dim
    contiguous) and out, the sequences' boundaries in `cu` (int32), `longest` their longest length."""
    import triton

    tokens, heads, dim = q.shape
    block_m, block_n, warps, stages, tma, transposed, least = config
    parts = split_head_dim(dim, least)
    if parts is None:
        raise ValueError(f"head dim {dim} is over 256")
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        q, k, v = (t.contiguous() for t in (q, k, v))
    out = torch.empty(tokens, heads, dim, device=q.device, dtype=q.dtype)
    scale_log2 = (dim ** -0.5 if scale is None else scale) * math.log2(math.e)
    grid = (triton.cdiv(max(int(longest), 1), block_m), cu.numel() - 1, heads)
    # A second tile narrower than the first would need a second matrix-instruction shape for P x V, which
    # Triton 3.6 miscompiles on Hopper (run 37: the last 16 of 80 columns wrong): its V tile is as wide as
    # the first, ending at the head's last column, and only the columns the first did not cover are kept.
    overlap = 0 < parts[1] < parts[0]
    tiles = dict(D1=parts[0], D2=parts[1], BLOCK_M=block_m, BLOCK_N=block_n, OVERLAP=overlap, num_warps=warps,
                 num_stages=stages)
    with LAUNCH:
        from ddp_eval.models.common import triton_attention_kernel as kernels

        # TMA needs 16-byte aligned bases and row strides; a first tile wider than the head would read the
        # next head's columns. Elsewhere the pointer loads serve.
        if tma and parts[0] <= dim and all(t.data_ptr() % 16 == 0 and t.stride(0) * t.element_size() % 16 == 0
                                           for t in (q, k, v)):
            v_parts = (parts[0], parts[0]) if overlap else parts
            descriptors = [d for t, rows, widths in ((q, block_m, parts), (k, block_n, parts), (v, block_n, v_parts))
                           for d in _descriptors(t, rows, widths)]
            kernels.attention_tma[grid](*descriptors, out, cu, scale_log2, out.stride(0), out.stride(1), HEAD_DIM=dim,
                                        **tiles)
        else:
            kernels.attention[grid](q, k, v, out, cu, scale_log2, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                                    v.stride(0), v.stride(1), out.stride(0), out.stride(1), DIM=dim, KT=transposed,
                                    **tiles)
    return out


def _descriptors(t: torch.Tensor, rows: int, parts: tuple[int, int]) -> list:
    """Two TMA descriptors of (tokens, heads x dim) (a strided view where t is one), tiles of `rows` by each
    part of the head dim. Reads past the last token come back as zeros; past a sequence's end the kernel
    masks them."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    flat = t.flatten(1)
    return [TensorDescriptor(flat, list(flat.shape), list(flat.stride()), [rows, part or 16]) for part in parts]


FAILED: list[BaseException] = []  # the Triton error after which `auto` runs varlen_attn (once a process)
_FAILING = threading.Lock()  # the batches' thread and the parity rows' may both meet the error


@torch.library.custom_op("ddp_eval::triton_varlen", mutates_args=())
def triton_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                  max_q: int, max_k: int, scale: float | None) -> torch.Tensor:
    """varlen_attn's interface (self-attention within packed sequences) on this file's kernel; where
    the queries' and keys' boundaries are separate tensors, or the sequences are short (windows), torch's
    varlen_attn. A torch op, so that compiled vision blocks call it as one opaque kernel."""
    return _attention(q, k, v, cu_q, cu_k, max_q, max_k, scale, fallback=False)


@torch.library.custom_op("ddp_eval::triton_varlen_auto", mutates_args=())
def triton_varlen_auto(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                       max_q: int, max_k: int, scale: float | None) -> torch.Tensor:
    """`triton_varlen` as `model.vision_attention=auto` runs it: where Triton fails to build or launch the
    kernel (a compiler error, too little shared memory), a warning, and varlen_attn from then on."""
    return _attention(q, k, v, cu_q, cu_k, max_q, max_k, scale, fallback=True)


def _attention(q, k, v, cu_q, cu_k, max_q, max_k, scale, fallback: bool) -> torch.Tensor:
    from ddp_eval.models.common.vision_attention import varlen_call

    if cu_q.data_ptr() != cu_k.data_ptr() or max(max_q, max_k) < SHORTEST or (fallback and FAILED):
        return varlen_call()[0](q, k, v, cu_q, cu_k, max_q, max_k, scale)
    try:
        return attend(q, k, v, cu_q, max_q, scale)
    except Exception as err:
        # Triton's own errors only: a fault on the GPU surfaces as torch's error and leaves nothing to fall back on.
        module = type(err).__module__
        if not fallback or not (module == "triton" or module.startswith("triton.")):
            raise
        with _FAILING:
            first = not FAILED
            FAILED.append(err)
        if first:
            log.warning("vision attention: the Triton kernel could not run here (%s: %s); varlen_attn serves the rest "
                        "of the run (model.vision_attention=varlen skips the attempt)", type(err).__name__,
                        str(err).splitlines()[0][:300] if str(err) else "")
        return varlen_call()[0](q, k, v, cu_q, cu_k, max_q, max_k, scale)


def build_ahead(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int, fallback: bool) -> None:
    """Compile the kernel for a tower of this shape (the layout the tower passes) on one short
    sequence, before the model's first batch needs it; `fallback` as `triton_varlen_auto` has it."""
    qkv = torch.zeros(SHORTEST, 3, heads, head_dim, device=device, dtype=dtype)
    cu = torch.tensor([0, SHORTEST], device=device, dtype=torch.int32)
    op = triton_varlen_auto if fallback else triton_varlen
    # q and k as the fused rotary embedding returns them (its own tensors), v a view of the projection
    op(qkv[:, 0].contiguous(), qkv[:, 1].contiguous(), qkv[:, 2], cu, cu, SHORTEST, SHORTEST, None)


def _out_shape(q, k, v, cu_q, cu_k, max_q, max_k, scale):
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


triton_varlen.register_fake(_out_shape)
triton_varlen_auto.register_fake(_out_shape)
