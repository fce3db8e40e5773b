"""The vision tower's rotary embedding at the benchmark's shapes: transformers' function against
`model.fused_rotary`'s kernel (a CUDA machine). Checks that the outputs are equal bit for bit and
times both per layer.

One layer of 16 images at VLMEvalKit's pixel setting (~5,200 patches each), 16 heads, head_dim 80; q
and k are views of one qkv tensor, as in the tower; cos and sin in float32 and, as a check of the cast,
in bfloat16.

    python bench/rotary.py --images 16 --json rotary.json
"""

from __future__ import annotations

import torch
from attention import layer_args, patch_counts, save, timed


def main() -> None:
    args = layer_args(__doc__)
    from transformers.models.qwen2_vl import modeling_qwen2_vl

    from ddp_eval.models.common.fused_rotary import fused_version, takes

    original = getattr(modeling_qwen2_vl.apply_rotary_pos_emb_vision, "original",
                       modeling_qwen2_vl.apply_rotary_pos_emb_vision)
    fused = fused_version(original)
    tokens, heads, dim, device = sum(patch_counts(args.images, 1280 * 28 * 28, 16384 * 28 * 28)), 16, 80, "cuda"
    gen = torch.Generator(device).manual_seed(0)
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "tokens": tokens}
    for table_dtype in (torch.float32, torch.bfloat16):
        qkv = torch.randn(tokens, 3, heads, dim, device=device, dtype=torch.bfloat16, generator=gen) * 4
        q, k, _ = qkv.permute(1, 0, 2, 3).unbind(0)
        angles = torch.rand(tokens, dim // 2, device=device, generator=gen) * tokens
        emb = torch.cat([angles, angles], dim=-1)
        cos, sin = emb.cos().to(table_dtype), emb.sin().to(table_dtype)
        assert takes(q, k, cos, sin)
        want, got = original(q, k, cos, sin), fused(q, k, cos, sin)
        equal = all(torch.equal(a, b) for a, b in zip(want, got))
        differing = sum(int((a != b).sum()) for a, b in zip(want, got))
        args_ = (q, k, cos, sin)
        eager_ms, fused_ms = (timed(lambda f=f, a=args_: f(*a), args.reps) * 1e3 for f in (original, fused))
        name = f"cos_sin_{str(table_dtype).split('.')[-1]}"
        results[name] = {"equal": equal, "differing_elements": differing, "eager_ms": eager_ms, "fused_ms": fused_ms}
        print(f"{name}: outputs equal {equal} ({differing} elements differ); transformers {eager_ms:.2f} ms, "
              f"fused {fused_ms:.2f} ms a layer ({tokens} patches)", flush=True)
    save(args.json, results)


if __name__ == "__main__":
    main()
