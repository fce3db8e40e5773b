"""What a DataLoader worker spends handing a batch's pixel values to the main process, float32 against bf16.

A Qwen-VL batch's pixel values are one float32 tensor of patches (~0.4 GB for the 16 images of 64 MMBench rows,
~1.5 GB for 64 distinct images). The worker that prepared it copies it into shared memory to hand it over, the
main process copies it again into pinned memory, and the GPU copies it in before the vision tower's first step,
which casts it to the model's dtype. Sent in that dtype (`model.pixels_in_model_dtype`) every copy is half as
large; the values are the same (the same round-to-nearest-even cast, in the worker instead of on the GPU).

Times, on this machine's CPU, one worker process returning prepared batches through a real DataLoader: the
image processor's call (the same in both), then what the main process waits per batch beyond it. Any machine:

    python bench/handover.py --images 64 --batches 4 --json handover.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = [(384, 384), (512, 512), (640, 480), (800, 600), (448, 336), (300, 200), (1024, 768), (560, 420)]


def images(count: int, min_pixels: int, max_pixels: int) -> list:
    import numpy as np
    from PIL import Image
    from qwen_vl_utils import smart_resize

    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        h, w = smart_resize(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
        out.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return out


class Batches(Dataset):
    """Item i: the pixel values of all images, in `dtype` (the processor's float32, or cast in the worker)."""

    def __init__(self, processor, pictures: list, batches: int, dtype: torch.dtype) -> None:
        self.processor, self.pictures, self.batches, self.dtype = processor, pictures, batches, dtype

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        pixels = self.processor(images=self.pictures, return_tensors="pt")["pixel_values"]
        made = time.perf_counter() - start
        return pixels.to(self.dtype), made


def handover(processor, pictures: list, batches: int, dtype: torch.dtype) -> dict:
    loader = DataLoader(Batches(processor, pictures, batches, dtype), batch_size=None, num_workers=1,
                        collate_fn=lambda x: x, prefetch_factor=1)
    waits, made, start = [], [], time.perf_counter()
    got = None
    for pixels, seconds in loader:
        now = time.perf_counter()
        waits.append(now - start)
        made.append(seconds)
        got = pixels
        start = time.perf_counter()
    return {"dtype": str(dtype), "gb": got.numel() * got.element_size() / 1e9, "shape": list(got.shape),
            "processor_s": made, "between_batches_s": waits,
            "beyond_processor_s": [w - m for w, m in zip(waits[1:], made[1:])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="distinct images a batch")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    from transformers import Qwen2VLImageProcessor

    low, high = 1280 * 28 * 28, 16384 * 28 * 28  # VLMEvalKit's Qwen2-VL setting
    processor = Qwen2VLImageProcessor(patch_size=14, temporal_patch_size=2, merge_size=2,
                                      size={"shortest_edge": low, "longest_edge": high})
    pictures = images(args.images, low, high)
    results = {"images": args.images, "batches": args.batches, "torch": torch.__version__, "passes": []}
    for dtype in (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16):  # twice each, alternating
        res = handover(processor, pictures, args.batches, dtype)
        results["passes"].append(res)
        print(f"{res['dtype']:>14}: {res['gb']:.2f} GB a batch; processor "
              f"{' '.join(f'{s:.2f}' for s in res['processor_s'])} s; batch to batch "
              f"{' '.join(f'{s:.2f}' for s in res['between_batches_s'])} s; beyond the processor (after the first) "
              f"{' '.join(f'{s:.2f}' for s in res['beyond_processor_s'])} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
