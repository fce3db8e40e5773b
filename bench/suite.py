"""Suite benchmark: the model-card table's three task families in one launch, against the batch-1 loop.

Workload (the Qwen2-VL-2B architecture with random bf16 weights, as `throughput.py` builds it;
VLMEvalKit's pixel setting; exactly 4 new tokens), three synthetic benchmarks of `--images` images each:
- MMBench_DEV_EN-shaped: one question per image, asked 4 times with the options rotated (circular copies);
- MME-shaped: two yes/no questions per image (the pair MME's acc+ scores), image rows paired by image_path;
- TextVQA_VAL-shaped: one short-answer question per image, ten reference answers.

Per benchmark: the batch-1 loop (VLMEvalKit's way) on `--baseline-rows` rows, then the runner in a fresh
process through the command line on that benchmark alone; then the three as one suite (data.benchmarks),
timed from command to summary.json. Prints one line per measurement; `--json` writes them all.

    python bench/suite.py --out /tmp/suite_bench --images 256 --baseline-rows 32 --json /tmp/suite.json
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput import SIZES, _image, base_overrides, batch1_loop, build_model, build_rows, cli_pass, pd_predictions  # noqa: E402

from ddp_eval.demo import write_tsv  # noqa: E402

MME_CATEGORIES = ["existence", "count", "position", "color", "OCR", "posters", "celebrity", "scene", "landmark",
                  "artwork", "commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]


def mmbench_rows(n: int, rng: random.Random) -> list[dict]:
    return build_rows(n, circular=True, seed=rng.randrange(2**31))


def mme_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for q in range(n):
        image = _image(rng, SIZES[q % len(SIZES)])
        category = MME_CATEGORIES[q % len(MME_CATEGORIES)]
        for k, answer in enumerate(("Yes", "No")):
            rows.append({"index": 2 * q + k, "image": image if k == 0 else str(2 * q), "image_path": f"{q}.jpg",
                         "question": f"Is there a rectangle of colour {k} in the picture? Please answer yes or no.",
                         "answer": answer, "category": category})
    return rows


def textvqa_rows(n: int, rng: random.Random) -> list[dict]:
    return [{"index": q, "image": _image(rng, SIZES[q % len(SIZES)]),
             "question": f"What is written on sign number {q}?",
             "answer": str([f"word{q}"] * 6 + [f"other{q}"] * 4)} for q in range(n)]


def suite_pass(model_dir: Path, files: list[Path], out: Path, overrides: list[str]) -> dict:
    """The three benchmarks as one suite in a fresh process: command -> summary.json."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    sets = [*base_overrides(model_dir, files[0], out), "data.path=",
            f"data.benchmarks=[{', '.join(map(str, files))}]", *overrides]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ddp_eval", *[x for o in sets for x in ("--set", o)]],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the suite pass failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "summary": summary,
            "log": [line for line in done.stderr.splitlines() if " INFO " in line or " WARNING " in line]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ddp_eval_suite_bench"))
    parser.add_argument("--images", type=int, default=256, help="images per benchmark")
    parser.add_argument("--baseline-rows", type=int, default=32, help="rows of each benchmark for the batch-1 loop")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="runner settings for every pass (repeatable)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(args.out / "qwen2_vl_2b_random")
    rng = random.Random(0)
    data = args.out / "data"
    files = []
    for name, build in (("MMBench_DEV_EN", mmbench_rows), ("MME", mme_rows), ("TextVQA_VAL", textvqa_rows)):
        path = data / f"{name}.tsv"  # the file name names the benchmark: its task and scoring rules
        if not path.exists():
            write_tsv(build(args.images, rng), path)
        files.append(path)
    import torch

    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "images": args.images,
                     "overrides": args.overrides}
    for path in files:
        base = batch1_loop(model_dir, path, args.baseline_rows, 1280 * 28 * 28, 16384 * 28 * 28)
        res = cli_pass(model_dir, path, args.out / path.stem, args.overrides)
        pred = pd_predictions(args.out / path.stem)
        same = [pred.get(i) == r for i, r in base["replies"].items()]
        results[path.stem] = {"batch1_rows_per_s": base["rows_per_s"], "rows": res["rows"],
                              "rows_per_s": res["rows_per_s"], "steady_rows_per_s": res["steady_rows_per_s"],
                              "predict_s": res["predict_s"], "whole_process_s": res["whole_process_s"],
                              "speedup_vs_batch1": res["rows_per_s"] / base["rows_per_s"],
                              "agreement_with_batch1": sum(same) / len(same), "peak_memory_gib": res["peak_memory_gib"]}
        r = results[path.stem]
        print(f"{path.stem}: batch-1 loop {r['batch1_rows_per_s']:.2f} rows/s; runner {r['rows_per_s']:.2f} rows/s "
              f"({r['rows']} rows in {r['predict_s']:.1f} s, {r['steady_rows_per_s'] or 0:.2f} after the first "
              f"batch; {r['whole_process_s']:.1f} s command to metrics) = {r['speedup_vs_batch1']:.1f}x, agreement "
              f"{r['agreement_with_batch1']:.2f}, peak {r['peak_memory_gib']:.1f} GiB", flush=True)
    suite = suite_pass(model_dir, files, args.out / "suite", args.overrides)
    results["suite"] = suite
    print(f"suite of {len(files)} in one launch: {suite['wall_s']:.1f} s from command to summary.json "
          f"(separately: {sum(results[p.stem]['whole_process_s'] for p in files):.1f} s)", flush=True)
    for row in suite["summary"]:
        print(f"  {row['benchmark']}: {row['metric']} {row['value']}, {row['rows']} rows, {row['seconds']} s, "
              f"{row['status']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
