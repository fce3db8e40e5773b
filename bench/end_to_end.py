"""End to end: the wall time from the command to metrics.json with the shipped config, in a fresh process.

The headline figure of the README's Speed section. Workload: bench/throughput.py's Qwen2-VL-2B-shaped
checkpoint (random bf16 weights) and its MMBench-shaped circular rows (4 option rotations per question,
the copies referring to the original's image). Each pass runs, as a user does,

    python -m ddp_eval --config configs/mmbench.yaml --set model.path=M --set data.path=T --set run.output_dir=O

with one more override: `generation.max_new_tokens=4`, because random weights never say EOS where a real
checkpoint stops after its letter. Passes run one after another and say which compile caches were warm:
`TORCHINDUCTOR_CACHE_DIR`, `FLASH_ATTENTION_CUTE_DSL_CACHE_DIR` and `TRITON_CACHE_DIR` point into
--out/caches (Triton's since run 40: before, its kernels stayed in ~/.triton between passes); the first pass
of a name finds them empty (cold), a pass named `NAME:warm` reuses the folder an earlier pass filled.

    python bench/end_to_end.py --out /tmp/e2e --questions 1075 --pass shipped --pass shipped:warm \\
        --pass old="model.reuse_prefix=false;model.decode_graphs=false;run.batch_size=16" --json e2e.json
    python bench/end_to_end.py --out /tmp/e2e --startup-profile 64     # where start-up time goes
    python bench/end_to_end.py --out /tmp/e2e --pass shipped --pass varlen="model.vision_attention=varlen" \
        --compare shipped:varlen                                       # and whether they predicted alike

Prints one line per pass (and its phase log lines) and writes them all to --json. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CONFIG = REPO / "configs" / "mmbench.yaml"


def workload(out: Path, questions: int) -> tuple[Path, Path]:
    from throughput import build_model, build_rows

    from ddp_eval.demo import write_tsv

    model_dir = build_model(out / "qwen2_vl_2b_random")
    tsv = out / f"mmbench_circular_{questions}.tsv"
    if not tsv.exists():
        write_tsv(build_rows(questions, circular=True), tsv)
    return model_dir, tsv


def cache_env(out: Path, name: str) -> tuple[dict[str, str], bool]:
    """The environment of a pass and whether its compile caches were filled by an earlier pass."""
    folder = out / "caches" / name.split(":")[0]
    warm = name.endswith(":warm")
    if not warm:
        shutil.rmtree(folder, ignore_errors=True)
    filled = folder.exists() and any(folder.rglob("*"))
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"),
           "FLASH_ATTENTION_CUTE_DSL_CACHE_DIR": str(folder / "fa4"), "TRITON_CACHE_DIR": str(folder / "triton")}
    return env, filled


def command(model_dir: Path, tsv: Path, run_dir: Path, overrides: list[str]) -> list[str]:
    sets = [f"model.path={model_dir}", f"data.path={tsv}", f"run.output_dir={run_dir}",
            "generation.max_new_tokens=4", *overrides]
    return ["-m", "ddp_eval", "--config", str(CONFIG), *[x for s in sets for x in ("--set", s)]]


def one_pass(out: Path, model_dir: Path, tsv: Path, name: str, overrides: list[str]) -> dict:
    run_dir = out / "runs" / name.replace(":", "_")
    shutil.rmtree(run_dir, ignore_errors=True)
    env, warm = cache_env(out, name)
    start = time.time()
    done = subprocess.run([sys.executable, *command(model_dir, tsv, run_dir, overrides)], env=env,
                          capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        return {"name": name, "overrides": overrides, "caches_warm": warm, "failed": done.returncode,
                "whole_process_s": wall, "stderr_tail": done.stderr[-4000:]}
    metrics = run_dir / "metrics.json"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rank = manifest["timings"]["ranks"][0]
    steady = ((rank["rows"] - rank["first_batch_rows"]) / rank["after_first_batch_s"]
              if rank.get("after_first_batch_s") else None)
    return {"name": name, "overrides": overrides, "caches_warm": warm,
            "command_to_metrics_s": metrics.stat().st_mtime - start, "whole_process_s": wall,
            "predict_s": rank["predict_s"], "first_batch_s": rank["first_batch_s"], "load_s": rank["load_s"],
            "startup_overhead_s": wall - rank["predict_s"], "rows": rank["rows"], "steady_rows_per_s": steady,
            "peak_memory_gib": rank.get("peak_memory_gib"), "speed": manifest.get("speed"),
            "parity": json.loads(metrics.read_text()).get("parity"),
            "log": [line for line in done.stderr.splitlines() if " INFO " in line or " WARNING " in line]}


def agreement(first: Path, second: Path) -> tuple[int, int]:
    """Rows of the first run's predictions.tsv whose reply the second run's gives too, and the first's rows."""
    import pandas as pd

    def replies(run: Path) -> dict[str, str]:
        table = pd.read_csv(run / "predictions.tsv", sep="\t", keep_default_na=False, dtype=str)
        return dict(zip(table["index"], table["prediction"]))

    a, b = replies(first), replies(second)
    return sum(b.get(i) == reply for i, reply in a.items()), len(a)


def startup_profile(out: Path, model_dir: Path, tsv: Path, rows: int) -> dict:
    """A short run under cProfile and -X importtime: the cumulative top of start-up, and the slowest imports."""
    run_dir = out / "runs" / "profile"
    shutil.rmtree(run_dir, ignore_errors=True)
    prof = out / "startup.prof"
    cmd = [sys.executable, "-X", "importtime", "-m", "cProfile", "-o", str(prof),
           *command(model_dir, tsv, run_dir, [f"data.limit={rows}"])]
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    imports = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 3:  # top-level and first-level imports only
            imports.append((int(m.group(2)) / 1e6, m.group(4)))
    imports.sort(reverse=True)
    table = pstats.Stats(str(prof)) if prof.exists() else None
    top = []
    if table is not None:
        table.sort_stats("cumulative")
        for func, (_, _, _, cum, _) in sorted(table.stats.items(), key=lambda kv: -kv[1][3])[:60]:
            top.append(f"{cum:8.2f} s  {func[0].split('site-packages/')[-1]}:{func[1]} {func[2]}")
    return {"rows": rows, "whole_process_s": wall, "returncode": done.returncode,
            "slowest_imports_s": imports[:25], "cumulative_top": top,
            "log": [line for line in done.stderr.splitlines() if " INFO " in line or " WARNING " in line]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ddp_eval_e2e"))
    parser.add_argument("--questions", type=int, default=1075, help="questions; x4 rows (1075: 4,300 rows)")
    parser.add_argument("--pass", dest="passes", action="append", default=[], metavar="NAME[:warm][=OVERRIDES]",
                        help="a fresh-process pass with ';'-separated extra --set overrides (repeatable)")
    parser.add_argument("--startup-profile", type=int, default=0, metavar="ROWS",
                        help="also profile a run of this many rows (cProfile + -X importtime)")
    parser.add_argument("--compare", action="append", default=[], metavar="A:B",
                        help="after the passes, how many rows passes A and B predicted alike (repeatable; "
                             "a warm pass as NAME_warm)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir, tsv = workload(args.out, args.questions)
    results: dict = {"rows_file": str(tsv), "config": str(CONFIG.relative_to(REPO)), "passes": []}
    for spec in args.passes:
        name, _, text = spec.partition("=")
        res = one_pass(args.out, model_dir, tsv, name, [o for o in text.split(";") if o])
        results["passes"].append(res)
        if args.json:  # after every pass: a later one that runs out of time loses only itself
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        if res.get("failed") is not None:
            print(f"{name}: FAILED (exit {res['failed']}) after {res['whole_process_s']:.1f} s:\n{res['stderr_tail']}",
                  flush=True)
            continue
        print(f"{name}: command -> metrics.json {res['command_to_metrics_s']:.1f} s (caches "
              f"{'warm' if res['caches_warm'] else 'cold'}); predict {res['predict_s']:.1f} s, first batch "
              f"{res['first_batch_s']:.1f} s after start, start-up overhead {res['startup_overhead_s']:.1f} s, "
              f"steady {res['steady_rows_per_s'] or 0:.1f} rows/s, peak {res['peak_memory_gib'] or 0:.1f} GiB, "
              f"parity {res['parity']}", *res["log"], sep="\n  ", flush=True)
    for pair in args.compare:
        first, _, second = pair.partition(":")
        same, rows = agreement(args.out / "runs" / first, args.out / "runs" / second)
        results[f"agreement_{first}_{second}"] = {"same": same, "rows": rows}
        print(f"predictions of {first} and {second}: {same} of {rows} rows the same", flush=True)
    if args.startup_profile:
        prof = startup_profile(args.out, model_dir, tsv, args.startup_profile)
        results["startup_profile"] = prof
        print(f"start-up profile ({prof['rows']} rows, {prof['whole_process_s']:.1f} s, exit {prof['returncode']}):",
              *prof["log"], "slowest imports (s, cumulative):",
              *[f"{s:6.2f}  {m}" for s, m in prof["slowest_imports_s"]], "cumulative:", *prof["cumulative_top"],
              sep="\n  ", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
