"""The vision tower's attention at the benchmark's shapes, kernel by kernel (a CUDA machine).

One layer's attention for a batch of images at VLMEvalKit's pixel setting: 16 heads, head_dim 80, each
image its own sequence of ~5,100 patches. Times torch's packed `varlen_attn`, FlashAttention-4's packed
kernel as `model.vision_attention=fa4` calls it (where `flash-attn-4` is installed), this package's
Triton kernel (`model.vision_attention=triton`; `--sweep` times it in every tiling, one process each),
transformers' per-image sdpa loop (cuDNN / flash per image) and `model.vision_attention=cudnn`'s op, and
checks every output against the first and against a float32 computation.

    python bench/attention.py --images 16 --sweep --json attention.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = [(384, 384), (512, 512), (640, 480), (800, 600), (448, 336), (300, 200), (1024, 768), (560, 420)]


def patch_counts(images: int, min_pixels: int, max_pixels: int) -> list[int]:
    from qwen_vl_utils import smart_resize

    counts = []
    for i in range(images):
        width, height = SIZES[i % len(SIZES)]
        h, w = smart_resize(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
        counts.append((h // 14) * (w // 14))
    return counts


def timed(fn, reps: int) -> float:
    """Mean seconds per call on the GPU, after two calls not timed."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def cudnn_ragged(q, k, v, cu, longest: int, scale: float, bucket: int = 0):
    """cuDNN's attention over all packed sequences in one call (torch's own varlen_attn takes this path
    from torch 2.12 on Hopper with cuDNN >= 9.18); `bucket` rounds the longest length up, so that
    batches of other image sizes can share one cuDNN plan (max_q is only a bound on the lengths)."""
    bound = -(-longest // bucket) * bucket if bucket else longest
    return torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu, cu, bound, bound, False, 0.0, False, False,
                                                   scale=scale)[0]


def fresh_shapes(images: int, reps: int, heads: int, dim: int, device, scale: float) -> dict:
    """Wall time per call (host included) when every call brings image sizes not seen before, as a real
    benchmark's batches do: kernels that build a plan per shape (cuDNN) pay for it here."""
    import random

    from torch.nn.attention.varlen import varlen_attn

    from ddp_eval.models.common.vision_attention import cudnn_segments

    rng = random.Random(0)
    shapes = [[4 * rng.randint(1250, 1400) for _ in range(images)] for _ in range(reps)]
    from ddp_eval.models.common.triton_attention import triton_varlen

    kernels = {"varlen_attn_torch": lambda q, cu, n: varlen_attn(q, q, q, cu, cu, n, n, scale=scale),
               "triton_varlen": lambda q, cu, n: triton_varlen(q, q, q, cu, cu, n, n, scale),
               "cudnn_segments": lambda q, cu, n: cudnn_segments(q, q, q, cu, cu, n, n, scale),
               "cudnn_ragged": lambda q, cu, n: cudnn_ragged(q, q, q, cu, n, scale),
               "cudnn_ragged_bucket1024": lambda q, cu, n: cudnn_ragged(q, q, q, cu, n, scale, 1024)}
    out = {}
    for name, kernel in kernels.items():
        seconds = []
        try:
            kernel(*_one(shapes[0], heads, dim, device))
        except Exception as err:  # report and go on: this is a measurement, not the runner
            out[name] = {"error": repr(err)}
            print(f"fresh shapes, {name}: failed: {err!r}", flush=True)
            continue
        for counts in shapes[1:]:
            q, cu, n = _one(counts, heads, dim, device)
            torch.cuda.synchronize()
            start = time.perf_counter()
            kernel(q, cu, n)
            torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        out[name] = {"mean_ms": 1e3 * sum(seconds) / len(seconds), "first_ms": 1e3 * seconds[0],
                     "max_ms": 1e3 * max(seconds)}
        print(f"fresh shapes, {name}: {out[name]['mean_ms']:.2f} ms a call on average (first "
              f"{out[name]['first_ms']:.1f}, slowest {out[name]['max_ms']:.1f})", flush=True)
    return out


def _one(counts: list[int], heads: int, dim: int, device) -> tuple:
    q = torch.randn(sum(counts), heads, dim, device=device, dtype=torch.bfloat16)
    return q, torch.tensor([0, *counts], device=device).cumsum(0).to(torch.int32), max(counts)


def save(path: str | None, results: dict) -> None:
    """Write the one-layer benchmarks' results as JSON where --json asks for it."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


def layer_args(doc: str) -> argparse.Namespace:
    """The command line of the one-layer benchmarks (this one, rotary.py): images, timed calls, JSON out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--head-dim", type=int, default=80, help="80: Qwen2-VL's and Qwen2.5-VL's; 64: Qwen3-VL's")
    parser.add_argument("--json")
    parser.add_argument("--sweep", action="store_true",
                        help="time the Triton kernel in every tiling of SWEEP, each in a process of its own")
    parser.add_argument("--one", help="only varlen_attn and this Triton tiling, e.g. 128,128,8,3,0,0,0 "
                                      "(--sweep's child)")
    return parser.parse_args()


SWEEP = [(m, n, w, s, tma, 0, least) for least in (0, 16) for tma in (0, 1)
         for m, n, w in ((64, 64, 4), (128, 64, 4), (128, 128, 8)) for s in (2, 3)]


def sweep(args: argparse.Namespace, results: dict) -> None:
    """Each tiling in a child process: a kernel that faults (an illegal address poisons the CUDA context)
    loses its own figure only."""
    import subprocess

    for config in SWEEP:
        name = "triton_" + "_".join(map(str, config))  # BLOCK_M, BLOCK_N, warps, stages, TMA, K transposed, least
        done = subprocess.run([sys.executable, __file__, "--images", str(args.images), "--reps", str(args.reps),
                               "--head-dim", str(args.head_dim), "--one", ",".join(map(str, config))],
                              capture_output=True, text=True, timeout=600)
        found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if found:
            results.update(json.loads(found[-1][len("RESULT "):]))
            print(next(line for line in done.stdout.splitlines() if line.startswith(name)), flush=True)
        else:
            results[name] = {"error": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1][:300]}"}
            print(f"{name}: failed: {results[name]['error']}", flush=True)


def main() -> None:
    args = layer_args(__doc__)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.varlen import varlen_attn

    counts = patch_counts(args.images, 1280 * 28 * 28, 16384 * 28 * 28)
    heads, dim, device = 16, args.head_dim, torch.device("cuda", 0)
    gen = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(sum(counts), heads, dim, device=device, dtype=torch.bfloat16, generator=gen)
               for _ in range(3))
    cu = torch.tensor([0, *counts], device=device).cumsum(0).to(torch.int32)
    longest, scale = max(counts), dim ** -0.5
    flop = 4 * sum(n * n for n in counts) * heads * dim
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "patches": counts}

    def packed():
        return varlen_attn(q, k, v, cu, cu, longest, longest, scale=scale)

    def per_image(backend):
        def call():
            bounds = cu.tolist()
            with sdpa_kernel(backend):
                return torch.cat([F.scaled_dot_product_attention(
                    *(t[a:b].transpose(0, 1)[None] for t in (q, k, v)), scale=scale)[0].transpose(0, 1)
                    for a, b in zip(bounds[:-1], bounds[1:])])
        return call

    reference = packed()
    bounds = cu.tolist()
    exact = torch.cat([F.scaled_dot_product_attention(  # float32 image by image: what both kernels round
        *(t[a:b].float().transpose(0, 1)[None] for t in (q, k, v)), scale=scale)[0].transpose(0, 1)
        for a, b in zip(bounds[:-1], bounds[1:])])

    def record(name, fn, first_call_s=None):
        out = fn().float()
        error, off = (out - reference.float()).abs().max().item(), (out - exact).abs()
        seconds = timed(fn, args.reps)
        results[name] = {"ms": seconds * 1e3, "tflops": flop / seconds / 1e12, "max_abs_diff": error,
                         "float32_max_abs_diff": off.max().item(), "float32_mean_abs_diff": off.mean().item(),
                         "first_call_s": first_call_s}
        print(f"{name}: {seconds * 1e3:.2f} ms, {flop / seconds / 1e12:.0f} TFLOP/s, max |diff| {error:.4f}, "
              f"from float32: max {off.max().item():.4f} mean {off.mean().item():.2e}"
              + (f", first call {first_call_s:.1f} s" if first_call_s is not None else ""), flush=True)

    record("varlen_attn_torch", packed)
    from ddp_eval.models.common.triton_attention import attend, triton_varlen

    if args.one:
        config = tuple(int(x) for x in args.one.split(","))
        name = "triton_" + "_".join(map(str, config))
        record(name, lambda: attend(q, k, v, cu, longest, scale, config))
        print("RESULT " + json.dumps({name: results[name]}), flush=True)
        return

    start = time.perf_counter()
    triton_varlen(q, k, v, cu, cu, longest, longest, scale)
    torch.cuda.synchronize()
    record("triton_varlen", lambda: triton_varlen(q, k, v, cu, cu, longest, longest, scale),
           time.perf_counter() - start)
    # as the tower passes them: q and k contiguous (rotated), v a view of the qkv projection's output
    qkv = torch.randn(sum(counts), 3, heads, dim, device=device, dtype=torch.bfloat16, generator=gen)
    v_view = qkv[:, 2]
    results["triton_v_view_ms"] = timed(lambda: triton_varlen(q, k, v_view, cu, cu, longest, longest, scale),
                                        args.reps) * 1e3
    results["varlen_v_view_ms"] = timed(lambda: varlen_attn(q, k, v_view, cu, cu, longest, longest, scale=scale),
                                        args.reps) * 1e3
    print(f"v a strided view: triton {results['triton_v_view_ms']:.2f} ms, varlen_attn "
          f"{results['varlen_v_view_ms']:.2f} ms", flush=True)
    if args.sweep:
        sweep(args, results)
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
        record(f"per_image_{backend.name.lower()}", per_image(backend))
    from ddp_eval.models.common.vision_attention import cudnn_segments, fa4_call

    record("cudnn_segments", lambda: cudnn_segments(q, k, v, cu, cu, longest, longest, scale))  # =cudnn
    for name, bucket in (("cudnn_ragged", 0), ("cudnn_ragged_bucket1024", 1024)):
        try:
            record(name, lambda b=bucket: cudnn_ragged(q, k, v, cu, longest, scale, b))
        except Exception as err:  # report and go on: this is a measurement, not the runner
            results[name] = {"error": repr(err)}
            print(f"{name}: failed: {err!r}", flush=True)

    try:
        fa4 = fa4_call(device)
        start = time.perf_counter()
        fa4(q, k, v, cu, cu, longest, longest, scale)
        torch.cuda.synchronize()
        record("fa4_varlen", lambda: fa4(q, k, v, cu, cu, longest, longest, scale), time.perf_counter() - start)
    except Exception as err:  # report and go on: this is a measurement, not the runner
        results["fa4_varlen"] = {"error": repr(err)}
        print(f"fa4_varlen: failed: {err!r}", flush=True)
    results["fresh_shapes"] = fresh_shapes(args.images, args.reps, heads, dim, device, scale)
    save(args.json, results)


if __name__ == "__main__":
    main()
