"""Data-parallel scaling: the same config on 1, 2, 4, 8 ranks (one GPU each) with torchrun.

For each world size: rows/s (from manifest.json) and scaling efficiency against 1 rank; merged
predictions compared with the 1-rank run; on GPUs, which GPU each rank's memory sits on
(nvidia-smi's per-process view, sampled while the run is going). Then one rank is killed mid-run,
the command re-run, and the shards checked for every row exactly once.

    python bench/scaling.py --config CONFIG --ranks 1,2,4,8 --out /tmp/scaling [--set k=v ...]

Works on CPU ranks too (gloo; no memory view), which is how its test runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd


def torchrun(nproc: int, config: Path, out: Path, sets: list[str]) -> list[str]:
    overrides = [x for s in [*sets, f"run.output_dir={out}"] for x in ("--set", s)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "ddp_eval", "--config", str(config), "--quiet", *overrides]


def env() -> dict[str, str]:
    return {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                           os.environ.get("PYTHONPATH", "")])}


def gpu_processes() -> list[tuple[int, str, int]]:
    """(pid, gpu uuid, MiB) of every process holding GPU memory; [] without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"]
    done = subprocess.run(query, capture_output=True, text=True)
    rows = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            rows.append((int(parts[0]), parts[1], int(float(parts[2]))))
    return rows


def run_world(nproc: int, config: Path, out: Path, sets: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    seen: dict[int, set[str]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(2.0):
            for pid, gpu, _ in gpu_processes():
                seen.setdefault(pid, set()).add(gpu)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    done = subprocess.run(torchrun(nproc, config, out, sets), env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    if done.returncode != 0:
        raise SystemExit(f"{nproc} ranks failed:\n{done.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"ranks": nproc, "rows_per_s": manifest["timings"]["rows_per_s"], "wall_s": wall,
            "gpu_processes": len(seen), "processes_on_several_gpus": sum(len(g) > 1 for g in seen.values())}


def predictions(out: Path) -> pd.Series:
    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    return table.set_index("index")["prediction"]


def records(out: Path) -> list[int]:
    lines = [json.loads(x) for p in (out / "shards").glob("*.jsonl") for x in p.read_text().splitlines() if x]
    return [r["index"] for r in lines if "index" in r]


def rank_pid(parent: int, rank: int) -> int | None:
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            if f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return int(pid)
        except OSError:
            continue
    return None


def kill_and_resume(nproc: int, config: Path, out: Path, sets: list[str], total: int) -> dict:
    """Kill rank 1 once its shard holds a few records, re-run, check every row exactly once."""
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(torchrun(nproc, config, out, sets), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    shard = out / "shards" / f"rank001-of-{nproc:03d}.jsonl"
    killed = False
    while proc.poll() is None and not killed:
        if shard.exists() and len(shard.read_text().splitlines()) >= 3:
            pid = rank_pid(proc.pid, 1)
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed = True
        time.sleep(0.05)
    proc.wait()
    before = len(set(records(out)))
    done = subprocess.run(torchrun(nproc, config, out, sets), env=env(), capture_output=True, text=True)
    after = records(out)
    return {"ranks": nproc, "killed": killed, "first_exit": proc.returncode, "rows_before_rerun": before,
            "rerun_exit": done.returncode, "rows": len(after), "distinct_rows": len(set(after)),
            "exactly_once": len(after) == len(set(after)) == total, "recomputed": len(after) - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ranks", default="1,2,4,8")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ddp_eval_scaling"))
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    worlds = [int(x) for x in args.ranks.split(",")]
    results = [run_world(n, args.config, args.out / f"w{n}", args.sets) for n in worlds]
    base = results[0]
    reference = predictions(args.out / f"w{worlds[0]}")
    for r in results:
        r["efficiency"] = r["rows_per_s"] / (r["ranks"] / base["ranks"] * base["rows_per_s"])
        r["identical_predictions"] = bool(predictions(args.out / f"w{r['ranks']}").equals(reference))
    largest = max(worlds)
    kill = kill_and_resume(largest, args.config, args.out / "kill", args.sets, len(reference)) if largest > 1 else None
    print("| ranks | rows/s | efficiency | identical to 1 rank | processes on >1 GPU |")
    print("| ---: | ---: | ---: | --- | ---: |")
    for r in results:
        print(f"| {r['ranks']} | {r['rows_per_s']:.2f} | {r['efficiency'] * 100:.1f}% | {r['identical_predictions']} "
              f"| {r['processes_on_several_gpus']} of {r['gpu_processes']} |")
    if kill:
        print(f"kill rank 1 of {kill['ranks']} and re-run: {kill}")
    if args.json:
        args.json.write_text(json.dumps({"worlds": results, "kill": kill}, indent=2) + "\n")


if __name__ == "__main__":
    main()
