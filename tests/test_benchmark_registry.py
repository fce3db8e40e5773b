"""Benchmark names: each resolves to VLMEvalKit's published TSV (URL, md5) and its task, downloads once
against a loopback server and loads with its task; a misspelt name names the closest ones; the
`benchmarks` command lists them."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from tiny_benchmarks import hallusion_rows, image_b64, mmmu_rows, ocrbench_rows, pope_rows, textvqa_rows, write

from ddp_eval.config import DataConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.load import download_benchmark, load_benchmark
from ddp_eval.tasks.registry import BENCHMARKS, TASKS, benchmark_in_name

HOST = "https://opencompass.openxlab.space/utils"
PUBLISHED = {  # VLMEvalKit e8e78f05
    "MME": ("yorn", f"{HOST}/VLMEval/MME.tsv", "b36b43c3f09801f5d368627fb92187c3"),
    "POPE": ("yorn", f"{HOST}/VLMEval/POPE.tsv", "c12f5acb142f2ef1f85a26ba2fbe41d5"),
    "HallusionBench": ("yorn", f"{HOST}/VLMEval/HallusionBench.tsv", "0c23ac0dc9ef46832d7a24504f2a0c7c"),
    "TextVQA_VAL": ("vqa", f"{HOST}/VLMEval/TextVQA_VAL.tsv", "b233b31f551bbf4056f2f955da3a92cd"),
    "DocVQA_VAL": ("vqa", f"{HOST}/VLMEval/DocVQA_VAL.tsv", "d5ee77e1926ff10690d469c56b73eabf"),
    "ChartQA_TEST": ("vqa", f"{HOST}/VLMEval/ChartQA_TEST.tsv", "c902e0aa9be5582a7aad6dcf52734b42"),
    "OCRBench": ("vqa", f"{HOST}/VLMEval/OCRBench.tsv", "e953d98a987cc6e26ef717b61260b778"),
    "MMStar": ("mcq", f"{HOST}/VLMEval/MMStar.tsv", "e1ecd2140806c1b1bbf54b43372efb9e"),
    "AI2D_TEST": ("mcq", f"{HOST}/VLMEval/AI2D_TEST.tsv", "0f593e0d1c7df9a3d69bf1f947e71975"),
    "RealWorldQA": ("mcq", f"{HOST}/VLMEval/RealWorldQA.tsv", "4de008f55dc4fd008ca9e15321dc44b7"),
    "MMMU_DEV_VAL": ("mcq", f"{HOST}/VLMEval/MMMU_DEV_VAL.tsv", "585e8ad75e73f75dcad265dfd0417d64"),
    "SEEDBench_IMG": ("mcq", f"{HOST}/benchmarks/SEEDBench/SEEDBench_IMG.tsv", "68017231464752261a2526d6ca3a10c0"),
    "ScienceQA_TEST": ("mcq", f"{HOST}/benchmarks/ScienceQA/ScienceQA_TEST.tsv", "e42e9e00f9c59a80d8a5db35bc32b71f"),
}


def mcq_rows():
    return [{"index": i, "question": f"q{i}", "hint": None, "A": "x", "B": "y", "answer": "A", "category": "c",
             "image": image_b64(i)} for i in range(2)]


ROWS = {"MME": lambda: [{**r, "image_path": f"x/{r['index'] // 10}.jpg"} for r in pope_rows()],
        "POPE": pope_rows, "HallusionBench": hallusion_rows, "OCRBench": ocrbench_rows, "MMMU_DEV_VAL": mmmu_rows}


def test_new_names_resolve_to_vlmevalkits_urls_md5s_and_tasks():
    for name, (task, url, md5) in PUBLISHED.items():
        spec = BENCHMARKS[name]
        assert (spec.task, spec.url, spec.md5) == (task, url, md5), name
    assert all(spec.task in TASKS for spec in BENCHMARKS.values())
    # every name is known to its task's rules (scoring and prompts depend on the name)
    assert all(TASKS[spec.task].rules(name) == name for name, spec in BENCHMARKS.items())


def test_each_new_name_downloads_once_and_loads_with_its_task(http_root, tmp_path):
    root, url = http_root
    cache = tmp_path / "cache"
    for name, (task, _, _) in PUBLISHED.items():
        rows = ROWS.get(name, textvqa_rows if task == "vqa" else mcq_rows)()
        body = write(rows, root / f"{name}.tsv").read_bytes()
        path = download_benchmark(name, str(cache), mirror=url, md5=hashlib.md5(body).hexdigest(),
                                  show_progress=False)
        assert path.read_bytes() == body
        bench = load_benchmark(DataConfig(path=name, cache_dir=str(cache)))
        assert (bench.name, bench.task, len(bench.samples)) == (name, task, len(rows))


def test_a_misspelt_name_names_the_closest_known_ones(tmp_path):
    with pytest.raises(DdpEvalError, match=r"benchmark not found: 'MMstar' is neither a file nor a known benchmark "
                                           r"name; did you mean MMStar\?"):
        load_benchmark(DataConfig(path="MMstar", cache_dir=str(tmp_path)))
    with pytest.raises(DdpEvalError, match="did you mean HallusionBench"):
        download_benchmark("Hallusionbench", str(tmp_path))


def test_a_file_name_names_the_longest_known_benchmark_it_contains():
    assert benchmark_in_name("Qwen2-VL-2B-Instruct_MMBench_DEV_EN_V11.xlsx") == "MMBench_DEV_EN_V11"
    assert benchmark_in_name("Qwen2-VL-2B-Instruct_HallusionBench.xlsx") == "HallusionBench"
    assert benchmark_in_name("predictions.tsv") is None


def test_benchmarks_command_lists_every_name_with_task_headline_and_rows():
    done = subprocess.run([sys.executable, "-m", "ddp_eval", "benchmarks"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:-1]}
    assert set(lines) == set(BENCHMARKS)
    assert lines["POPE"].split() == ["POPE", "yorn", "Overall", "F1", "5127"]
    assert lines["MMMU_DEV_VAL"].split() == ["MMMU_DEV_VAL", "mcq", "Overall", "Acc", "(val)", "1050"]
    assert lines["OCRBench"].split() == ["OCRBench", "vqa", "Final", "Score", "1000"]
    assert lines["MMBench_DEV_EN_V11"].split()[-1] == "unknown"
