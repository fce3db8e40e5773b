"""Throughput benchmark: the runner on Qwen2-VL-2B-shaped work, against the batch-1 loop, same run.

Workload (fixed so numbers compare across versions):
- model: the Qwen2-VL-2B-Instruct architecture (its config.json's sizes), or with `--family qwen3_vl`
  Qwen3-VL-2B-Instruct's (16-pixel patches, DeepStack, interleaved M-RoPE), random bf16 weights, saved
  to a local directory and loaded by the runner's own loading code;
- data: MMBench-format rows with generated images cycling through 8 sizes, a hint on half of the
  rows; `--circular` expands every question into 4 option rotations whose copies refer to the
  original image by index (MMBench's CircularEval layout);
- VLMEvalKit's pixel setting for the family by default (Qwen2-VL: min 1280*28*28, max 16384*28*28;
  Qwen3-VL: qwen_vl_utils' defaults for factor 32); exactly 4 new tokens.

    python bench/throughput.py --out /tmp/bench --rows 512 --baseline-rows 64 \\
        --run b16="run.batch_size=16" --run b32="run.batch_size=32"

Prints one line per measurement and writes them all to --json if given. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddp_eval.config import load_config  # noqa: E402
from ddp_eval.demo import build_processor, build_tokenizer, token_ids, write_tsv  # noqa: E402
from ddp_eval.distributed.group import DistInfo  # noqa: E402
from ddp_eval.distributed.log import setup_logging  # noqa: E402
from ddp_eval.models.qwen2_vl.vision_reuse import find_vision_tower  # noqa: E402
from ddp_eval.run.job import plan_job  # noqa: E402
from ddp_eval.run.runner import Options, load_backend, run  # noqa: E402
from ddp_eval.tasks.load import load_benchmark  # noqa: E402

SIZES = [(384, 384), (512, 512), (640, 480), (800, 600), (448, 336), (300, 200), (1024, 768), (560, 420)]
H100_BF16_DENSE_TFLOPS = 989.0

# Qwen2-VL-2B-Instruct's config.json, sizes only.
TEXT = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
            intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, rope_theta=1_000_000.0,
            max_position_embeddings=32768, rms_norm_eps=1e-6, hidden_act="silu",
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
VISION = dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, hidden_size=1536, in_channels=3, hidden_act="quick_gelu")
# Qwen3-VL-2B-Instruct's config.json, sizes only.
QWEN3_TEXT = dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                  intermediate_size=6144, vocab_size=151936, max_position_embeddings=262144, rms_norm_eps=1e-6,
                  hidden_act="silu", rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                                                      "mrope_section": [24, 20, 20], "mrope_interleaved": True})
QWEN3_VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                    deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh", in_channels=3)


def build_model(out: Path, family: str = "qwen2_vl") -> Path:
    """Random-weight Qwen2-VL-2B- or Qwen3-VL-2B-shaped checkpoint (our small tokenizer; embedding rows as the
    real one)."""
    from transformers import AutoModelForImageTextToText, GenerationConfig, Qwen2VLConfig, Qwen3VLConfig

    if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
        return out
    tokenizer = build_tokenizer(family)
    ids = token_ids(tokenizer)
    if family == "qwen3_vl":
        config = Qwen3VLConfig(text_config={**QWEN3_TEXT, **ids}, vision_config=QWEN3_VISION, tie_word_embeddings=True,
                               **ids)
    else:
        config = Qwen2VLConfig(text_config={**TEXT, **ids}, vision_config=VISION, **ids)
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=[ids["eos_token_id"]], pad_token_id=ids["pad_token_id"])
    model.save_pretrained(out)
    build_processor(tokenizer, family).save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def _image(rng: random.Random, size: tuple[int, int]) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x0, y0, x0 + rng.randrange(10, size[0] // 2), y0 + rng.randrange(10, size[1] // 2))
        draw.rectangle(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def build_rows(n_questions: int, circular: bool, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for q in range(n_questions):
        options = [f"option {w} for question {q}" for w in ("alpha", "beta", "gamma", "delta")]
        base = {"question": f"Which of the following best describes object number {q} in the image?",
                "hint": "The image shows several coloured rectangles on a plain background." if q % 2 else None,
                "category": f"cat{q % 6}", "l2-category": f"l2_{q % 3}"}
        image = _image(rng, SIZES[q % len(SIZES)])
        for r in range(4 if circular else 1):
            rotated = options[r:] + options[:r]
            rows.append({**base, "index": q + r * 1_000_000, **dict(zip("ABCD", rotated)),
                         "answer": "ABCD"[rotated.index(options[0])], "image": image if r == 0 else str(q)})
    return rows


def row_flops(patches: int, tokens: int) -> float:
    """Forward FLOPs of one row: 2 x params x positions for the matmuls, plus attention scores."""
    v, t = VISION, TEXT
    d = v["embed_dim"]
    vis = patches * v["depth"] * (2 * (4 * d * d + 2 * d * d * v["mlp_ratio"]) + 4 * patches * d)
    merger = patches * 2 * (4 * d) * (4 * d) / 4 + patches / 4 * 2 * 4 * d * t["hidden_size"]
    h, kv = t["hidden_size"], t["hidden_size"] // t["num_attention_heads"] * t["num_key_value_heads"]
    per_token = 2 * (2 * h * h + 2 * h * kv + 3 * h * t["intermediate_size"])
    llm = tokens * t["num_hidden_layers"] * (per_token + 4 * tokens * h) + 2 * h * t["vocab_size"]
    return vis + merger + llm


def workload_size(model_dir: Path, tsv: Path, min_pixels: int, max_pixels: int) -> tuple[int, int, float]:
    """(LLM tokens, ViT patches, FLOPs) summed over the benchmark, from the runner's own size estimate."""
    from qwen_vl_utils import smart_resize

    cfg = load_config(None, [f"model.path={model_dir}", f"data.path={tsv}", f"model.min_pixels={min_pixels}",
                             f"model.max_pixels={max_pixels}"])
    bench = load_benchmark(cfg.data)
    job = plan_job(cfg, bench)
    costs, patch = job.costs, job.family.patch_size
    tokens = patches = flops = 0
    for s in bench.samples:
        w, h = bench.images.size(s.image_keys[0])
        rh, rw = smart_resize(h, w, factor=2 * patch, min_pixels=min_pixels, max_pixels=max_pixels)
        p = (rh // patch) * (rw // patch)
        tok = costs[s.index] + 30  # + chat template tokens
        tokens, patches, flops = tokens + tok, patches + p, flops + row_flops(p, tok)
    return tokens, patches, flops if job.family.name == "qwen2_vl" else float("nan")  # row_flops: Qwen2-VL's sizes


def batch1_loop(model_dir: Path, tsv: Path, n: int) -> dict:
    """VLMEvalKit's loop: per row, resize + processor + generate, batch 1, with the family's pixels and its
    wrapper's processor call (Qwen3-VL: 16-pixel patches and do_resize=False)."""
    from qwen_vl_utils import fetch_image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ddp_eval.models.qwen2_vl.preprocess import chat_messages

    cfg = load_config(None, [f"model.path={model_dir}", f"data.path={tsv}", f"data.limit={n + 2}"])
    bench = load_benchmark(cfg.data)
    job = plan_job(cfg, bench)
    min_pixels, max_pixels = job.pixels.min_pixels, job.pixels.max_pixels
    patch, resize = job.family.patch_size, {} if job.family.processor_resizes else {"do_resize": False}
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.bfloat16, device_map={"": "cuda:0"},
                                                        attn_implementation="sdpa").eval()
    replies = {}
    for i, s in enumerate(bench.samples):
        if i == 2:  # two warm-up rows
            torch.cuda.synchronize()
            start = time.perf_counter()
        image = fetch_image({"image": bench.images.open(s.image_keys[0]), "min_pixels": min_pixels,
                             "max_pixels": max_pixels}, image_patch_size=patch)
        content = job.family.content(job.task, s, bench.name)
        text = processor.apply_chat_template(chat_messages(content), tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[text], images=[image], return_tensors="pt", **resize).to("cuda:0")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False, temperature=None, top_p=None,
                                 top_k=None)
        replies[s.index] = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True,
                                                  clean_up_tokenization_spaces=False)[0]
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del model
    torch.cuda.empty_cache()
    return {"rows": n, "seconds": elapsed, "rows_per_s": n / elapsed, "replies": replies,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def base_overrides(model_dir: Path, tsv: Path, out: Path) -> list[str]:
    return [f"model.path={model_dir}", f"data.path={tsv}", "model.dtype=bfloat16", "generation.max_new_tokens=4",
            f"run.output_dir={out}", "run.num_workers=6"]


def startup(model_dir: Path, tsv: Path, out: Path, rows: int) -> dict:
    """Process start -> first batch written, through the real command line (a fresh Python process)."""
    res = cli_pass(model_dir, tsv, out, [f"data.limit={rows}", "run.batch_size=16"])
    return {"first_batch_s": res["first_batch_s"], "load_s": res["load_s"], "whole_process_s": res["whole_process_s"],
            "rows": rows, "log": res["log"]}


def cli_pass(model_dir: Path, tsv: Path, out: Path, overrides: list[str]) -> dict:
    """A pass through the real command line in a fresh Python process, as a user runs it: it pays
    every one-off cost (CUDA context and kernel loading, compiles; on-disk compile caches are used if
    an earlier process on this machine filled them)."""
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    sets = [x for o in [*base_overrides(model_dir, tsv, out), *overrides] for x in ("--set", o)]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ddp_eval", *sets], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the command line pass failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    timings = json.loads((out / "manifest.json").read_text())["timings"]
    phases = [line for line in done.stderr.splitlines() if " INFO " in line or " WARNING " in line]
    return {**_summary(timings, overrides, model_dir), "whole_process_s": wall, "log": phases}


def runner_pass(name: str, model_dir: Path, tsv: Path, out: Path, overrides: list[str]) -> dict:
    import shutil

    shutil.rmtree(out / name, ignore_errors=True)
    cfg = load_config(None, [*base_overrides(model_dir, tsv, out / name), *overrides])
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cuda", 0), initialized=False)
    torch.cuda.reset_peak_memory_stats()
    torch._dynamo.reset()  # each pass compiles from scratch, as a fresh process would (runs 5-9 did not)
    start = time.perf_counter()
    run(cfg, info, Options(show_progress=False, process_start=start))
    return _summary(json.loads((out / name / "manifest.json").read_text())["timings"], overrides, model_dir)


def _summary(timings: dict, overrides: list[str], model_dir: Path) -> dict:
    """The figures of one pass from its run manifest's timings (one rank)."""
    from ddp_eval.models.registry import family_for
    from ddp_eval.tasks.base import TaskSettings

    cfg = load_config(None, ["model.path=m", "data.path=d", *overrides])
    pixels = family_for(model_dir).pixels(cfg, TaskSettings())
    rank = timings["ranks"][0]
    return {"rows": rank["rows"], "predict_s": rank["predict_s"], "rows_per_s": timings["rows_per_s"],
            "load_s": rank["load_s"], "first_batch_s": rank["first_batch_s"], "wait_s": rank["wait_s"],
            "generate_s": rank["generate_s"],
            "steady_rows_per_s": (rank["rows"] - rank["first_batch_rows"]) / rank["after_first_batch_s"]
            if rank["after_first_batch_s"] else None,
            "peak_memory_gib": rank["peak_memory_gib"], "overrides": overrides,
            "min_pixels": pixels.min_pixels, "max_pixels": pixels.max_pixels}


def profile_batch(model_dir: Path, tsv: Path, rows: int, overrides: list[str]) -> dict:
    """One batch through the runner's own backend with a run's settings (after a warm-up batch): its
    wall time, the GPU kernel time inside it, the kernel table, and one CPU thread's preprocessing time."""
    from torch.profiler import ProfilerActivity, profile

    cfg = load_config(None, [*base_overrides(model_dir, tsv, Path("/tmp/unused")), *overrides])
    bench = load_benchmark(cfg.data)
    job = plan_job(cfg, bench, "cuda")  # the switches a run on the GPU takes (prefix reuse, decode graphs)
    processor = job.family.load_processor(cfg.model, job.pixels)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cuda", 0), initialized=False)
    replica = load_backend(job, info, processor)
    preprocess = job.family.preprocessor(processor, bench, job.task, job.speed, job.pixels)
    order = sorted(bench.samples, key=lambda s: (s.image_keys, s.index))
    batches = [tuple(s.index for s in order[i:i + rows]) for i in (0, rows)]
    start = time.perf_counter()
    prepared = [preprocess(b, idx) for b, idx in enumerate(batches)]
    prep_s = (time.perf_counter() - start) / len(prepared)
    replica.replies(prepared[0])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof, _timed_calls(find_vision_tower(replica.model)) as calls:
        start = time.perf_counter()
        replica.replies(prepared[1])
        torch.cuda.synchronize()
        wall_s = time.perf_counter() - start
    events = prof.key_averages()
    gpu_s = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) for e in events) / 1e6
    vision_s = sum(a.elapsed_time(b) for a, b in calls) / 1e3  # the vision tower's span against the rest
    table = events.table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=110)
    return {"rows": rows, "overrides": overrides, "batch_wall_s": wall_s, "gpu_kernel_s": gpu_s,
            "vision_tower_gpu_s": vision_s, "prep_one_thread_s": prep_s, "table": table}


@contextlib.contextmanager
def _timed_calls(module: torch.nn.Module):
    """CUDA events around every forward call of `module` while the block runs: yields the list of (start, end)
    pairs, to be read after a synchronize (the span each call kept the GPU's stream)."""
    pairs = []

    def enter(*_):
        pairs.append([torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)])
        pairs[-1][0].record()

    def leave(*_):
        pairs[-1][1].record()

    hooks = [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield pairs
    finally:
        for hook in hooks:
            hook.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ddp_eval_bench"))
    parser.add_argument("--rows", type=int, default=512, help="questions (x4 rows with --circular)")
    parser.add_argument("--circular", action="store_true")
    parser.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "qwen3_vl"],
                        help="the 2B architecture to build (random bf16 weights)")
    parser.add_argument("--baseline-rows", type=int, default=64, help="rows for the batch-1 loop; 0 skips it")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="a runner pass: name and ';'-separated --set overrides (repeatable)")
    parser.add_argument("--process", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="a pass through the command line in a fresh Python process (repeatable; after --run)")
    parser.add_argument("--startup-rows", type=int, default=0,
                        help="also time process start -> first batch with the CLI on this many rows")
    parser.add_argument("--compare", action="append", default=[], metavar="A:B",
                        help="report the share of rows where runs A and B predicted the same reply")
    parser.add_argument("--without-cudnn-sdp", action="append", default=[], metavar="NAME",
                        help="run the --run pass NAME with cuDNN's sdpa backend off (the language model's sdpa "
                             "then takes flash / memory-efficient kernels), to see what its per-shape plans cost")
    parser.add_argument("--profile", type=int, default=0, help="profile one batch of this many rows at the end")
    parser.add_argument("--profile-set", default="", metavar="OVERRIDES",
                        help="';'-separated --set overrides for the profiled batch")
    parser.add_argument("--json", type=Path, help="write all results here")
    args = parser.parse_args()
    setup_logging(0, 1, quiet=True)
    logging.getLogger("ddp_eval").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model_dir = build_model(args.out / f"{args.family}_2b_random", args.family)
    print(f"model ready in {time.perf_counter() - t0:.1f} s", flush=True)
    tsv = args.out / f"bench_{args.rows}{'_circular' if args.circular else ''}.tsv"
    if not tsv.exists():
        write_tsv(build_rows(args.rows, args.circular), tsv)
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows_file": str(tsv)}
    import transformers

    results["transformers"] = transformers.__version__
    if args.startup_rows:
        results["startup"] = startup(model_dir, tsv, args.out / "startup", args.startup_rows)
        print(f"startup: first batch {results['startup']['first_batch_s']:.1f} s after process start "
              f"(model load {results['startup']['load_s']:.1f} s)", *results["startup"]["log"], sep="\n", flush=True)
    if args.baseline_rows:
        torch.cuda.reset_peak_memory_stats()
        base = batch1_loop(model_dir, tsv, args.baseline_rows)
        results["batch1"] = {k: v for k, v in base.items() if k != "replies"}
        print(f"batch-1 loop: {base['rows_per_s']:.2f} rows/s over {base['rows']} rows", flush=True)
    for spec, fresh_process in [(r, False) for r in args.run] + [(p, True) for p in args.process]:
        name, _, text = spec.partition("=")
        overrides = [o for o in text.split(";") if o]
        if fresh_process:
            res = cli_pass(model_dir, tsv, args.out / name, overrides)
            print(f"{name} (fresh process, {res['whole_process_s']:.1f} s in all):", *res["log"], sep="\n  ")
        else:
            torch.backends.cuda.enable_cudnn_sdp(name not in args.without_cudnn_sdp)
            res = runner_pass(name, model_dir, tsv, args.out, overrides)
            torch.backends.cuda.enable_cudnn_sdp(True)
        tokens, patches, flops = workload_size(model_dir, tsv, res["min_pixels"], res["max_pixels"])
        rate = res["rows_per_s"]
        res.update(tokens_per_s=tokens / res["predict_s"], patches_per_s=patches / res["predict_s"],
                   tflop_per_row=flops / res["rows"] / 1e12,
                   # With shared images the rows' own FLOPs overstate the work done (reuse skips most of it).
                   mfu=None if args.circular else flops / res["predict_s"] / (H100_BF16_DENSE_TFLOPS * 1e12))
        if args.baseline_rows:
            pred = pd_predictions(args.out / name)
            same = [pred[i] == r for i, r in base["replies"].items() if i in pred]
            res["agreement_with_batch1"] = sum(same) / len(same) if same else None
            res["speedup_vs_batch1"] = rate / base["rows_per_s"]
        results[name] = res
        print(f"{name}: {rate:.2f} rows/s ({res['rows']} rows in {res['predict_s']:.1f} s; "
              f"{res['steady_rows_per_s'] or 0:.2f} rows/s after the first batch), "
              f"{res['tokens_per_s']:.0f} tok/s, {res['patches_per_s']:.0f} patches/s, "
              f"peak {res['peak_memory_gib']:.1f} GiB, "
              + (f"MFU {res['mfu'] * 100:.1f}%, " if res["mfu"] is not None else "")
              + f"{res['tflop_per_row']:.1f} TFLOP/row, first batch {res['first_batch_s']:.1f} s after start, "
              f"waited {res['wait_s']:.1f} s for batches"
              + (f", agreement {res['agreement_with_batch1']:.2f}" if args.baseline_rows else ""), flush=True)
    for pair in args.compare:
        a, b = pair.split(":")
        pa, pb = pd_predictions(args.out / a), pd_predictions(args.out / b)
        same = sum(pa[i] == pb.get(i) for i in pa) / len(pa)
        results[f"agreement_{a}_{b}"] = same
        print(f"agreement {a} vs {b}: {same:.4f} of {len(pa)} rows", flush=True)
    if args.profile:
        prof = profile_batch(model_dir, tsv, args.profile, [o for o in args.profile_set.split(";") if o])
        results["profile"] = prof
        print(f"profiled batch of {prof['rows']} rows ({args.profile_set or 'defaults'}): "
              f"{prof['batch_wall_s'] * 1e3:.0f} ms wall, {prof['gpu_kernel_s'] * 1e3:.0f} ms of GPU kernels "
              f"(the vision tower's range: {prof['vision_tower_gpu_s'] * 1e3:.0f} ms), "
              f"preprocessing on one CPU thread {prof['prep_one_thread_s'] * 1e3:.0f} ms", prof["table"], sep="\n",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def pd_predictions(out: Path) -> dict[int, str]:
    import pandas as pd

    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    return dict(zip(table["index"].astype(int), table["prediction"].astype(str)))


if __name__ == "__main__":
    main()
