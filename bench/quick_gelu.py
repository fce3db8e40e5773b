"""The vision MLP's QuickGELU at the benchmark's shapes: transformers' activation against
`model.fused_activation`'s kernel (a CUDA machine). Checks that the outputs are equal bit for bit and
times both per layer.

One layer of 16 images at VLMEvalKit's pixel setting (~5,200 patches each), fc1's output width 5,120,
values spread as a linear layer's output is (and, as a check of the tails, a wide spread), in bfloat16
and float16.

    python bench/quick_gelu.py --images 16 --json quick_gelu.json
"""

from __future__ import annotations

import torch
from attention import layer_args, patch_counts, save, timed


def main() -> None:
    args = layer_args(__doc__)
    from transformers.activations import QuickGELUActivation

    from ddp_eval.models.common.fused_quick_gelu import quick_gelu, takes

    original = QuickGELUActivation()
    tokens, width, device = sum(patch_counts(args.images, 1280 * 28 * 28, 16384 * 28 * 28)), 5120, "cuda"
    gen = torch.Generator(device).manual_seed(0)
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "tokens": tokens}
    for dtype in (torch.bfloat16, torch.float16):
        for spread in (3.0, 40.0):
            x = (torch.randn(tokens, width, device=device, generator=gen) * spread).to(dtype)
            assert takes(x)
            want, got = original(x), quick_gelu(x)
            differing = int((want != got).sum())
            eager_ms, fused_ms = (timed(lambda f=f, x=x: f(x), args.reps) * 1e3 for f in (original, quick_gelu))
            name = f"{str(dtype).split('.')[-1]}_spread_{spread:g}"
            results[name] = {"equal": differing == 0, "differing_elements": differing, "eager_ms": eager_ms,
                             "fused_ms": fused_ms}
            print(f"{name}: outputs equal {differing == 0} ({differing} elements differ); transformers "
                  f"{eager_ms:.3f} ms, fused {fused_ms:.3f} ms a layer ({tokens} x {width})", flush=True)
    save(args.json, results)


if __name__ == "__main__":
    main()
