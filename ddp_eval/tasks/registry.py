"""Task names -> tasks, and benchmark names -> their task and the file VLMEvalKit publishes (URL, md5).

To add a benchmark family: write its folder under tasks/ and add its task to TASKS. To add a
benchmark of a known family: add one line to BENCHMARKS (and its name to the task's rules, where
scoring or prompts depend on the name).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.base import Task, known_within
from ddp_eval.tasks.mcq.task import MultipleChoiceTask
from ddp_eval.tasks.vqa.task import ShortAnswerTask
from ddp_eval.tasks.yorn.task import YesNoTask

TASKS: dict[str, Task] = {task.name: task for task in (MultipleChoiceTask(), YesNoTask(), ShortAnswerTask())}
DEFAULT_TASK = "mcq"  # a local file without data.task


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    task: str
    url: str
    md5: str
    rows: int | None = None  # rows of VLMEvalKit's TSV, where known


_HOST = "https://opencompass.openxlab.space/utils"
_MMBENCH = f"{_HOST}/benchmarks/MMBench"
_VLMEVAL = f"{_HOST}/VLMEval"

BENCHMARKS: dict[str, BenchmarkSpec] = {spec.name: spec for spec in (
    *(BenchmarkSpec(name, "mcq", f"{_MMBENCH}/{name}.tsv", md5, rows) for name, md5, rows in (
        ("MMBench_DEV_EN", "b6caf1133a01c6bb705cf753bb527ed8", 4329),
        ("MMBench_TEST_EN", "6939fadb0ce626fefc0bdc9c64efc528", 6666),
        ("MMBench_DEV_CN", "08b8fc3324a5ed74155350f57be69fbd", 4329),
        ("MMBench_TEST_CN", "7e1239baf0ee4c8b513e19705a0f317e", 6666),
        ("MMBench_DEV_EN_V11", "30c05be8f2f347a50be25aa067248184", None),
        ("MMBench_TEST_EN_V11", "8d1a704e791df6f5d9fb3ef782b65365", None),
        ("MMBench_DEV_CN_V11", "593f9b5f6bea453d870a798b34ae4f37", None),
        ("MMBench_TEST_CN_V11", "156e6569f9547afb16603eca16e85373", None),
    )),
    BenchmarkSpec("MMStar", "mcq", f"{_VLMEVAL}/MMStar.tsv", "e1ecd2140806c1b1bbf54b43372efb9e", 1500),
    BenchmarkSpec("SEEDBench_IMG", "mcq", f"{_HOST}/benchmarks/SEEDBench/SEEDBench_IMG.tsv",
                  "68017231464752261a2526d6ca3a10c0", 14233),
    BenchmarkSpec("AI2D_TEST", "mcq", f"{_VLMEVAL}/AI2D_TEST.tsv", "0f593e0d1c7df9a3d69bf1f947e71975", 3088),
    BenchmarkSpec("ScienceQA_TEST", "mcq", f"{_HOST}/benchmarks/ScienceQA/ScienceQA_TEST.tsv",
                  "e42e9e00f9c59a80d8a5db35bc32b71f", 2017),
    BenchmarkSpec("RealWorldQA", "mcq", f"{_VLMEVAL}/RealWorldQA.tsv", "4de008f55dc4fd008ca9e15321dc44b7", 765),
    BenchmarkSpec("MMMU_DEV_VAL", "mcq", f"{_VLMEVAL}/MMMU_DEV_VAL.tsv", "585e8ad75e73f75dcad265dfd0417d64", 1050),
    BenchmarkSpec("MME", "yorn", f"{_VLMEVAL}/MME.tsv", "b36b43c3f09801f5d368627fb92187c3", 2374),
    BenchmarkSpec("POPE", "yorn", f"{_VLMEVAL}/POPE.tsv", "c12f5acb142f2ef1f85a26ba2fbe41d5", 5127),
    BenchmarkSpec("HallusionBench", "yorn", f"{_VLMEVAL}/HallusionBench.tsv", "0c23ac0dc9ef46832d7a24504f2a0c7c", 951),
    BenchmarkSpec("TextVQA_VAL", "vqa", f"{_VLMEVAL}/TextVQA_VAL.tsv", "b233b31f551bbf4056f2f955da3a92cd", 5000),
    BenchmarkSpec("DocVQA_VAL", "vqa", f"{_VLMEVAL}/DocVQA_VAL.tsv", "d5ee77e1926ff10690d469c56b73eabf", 5349),
    BenchmarkSpec("ChartQA_TEST", "vqa", f"{_VLMEVAL}/ChartQA_TEST.tsv", "c902e0aa9be5582a7aad6dcf52734b42", 2500),
    BenchmarkSpec("OCRBench", "vqa", f"{_VLMEVAL}/OCRBench.tsv", "e953d98a987cc6e26ef717b61260b778", 1000),
)}


def benchmark_spec(name: str) -> BenchmarkSpec | None:
    return BENCHMARKS.get(name)


def benchmark_in_name(name: str) -> str | None:
    """The benchmark a file name names: the longest known name it contains (VLMEvalKit's way of telling a
    prediction file's dataset), else None."""
    return known_within(name, BENCHMARKS)


def closest_benchmarks(name: str, n: int = 3) -> list[str]:
    """Known names that look like `name` (case aside), for the error of a misspelt one."""
    lower = {known.lower(): known for known in BENCHMARKS}
    return [lower[k] for k in difflib.get_close_matches(name.lower(), lower, n=n, cutoff=0.5)]


def unknown_benchmark(name: str, what: str = "data.path") -> DdpEvalError:
    close = closest_benchmarks(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return DdpEvalError(f"{what}: benchmark not found: {name!r} is neither a file nor a known benchmark name{hint} "
                        "(python -m ddp_eval benchmarks lists them)")


def get_task(name: str) -> Task:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DdpEvalError(f"data.task: unknown task {name!r}{hint} (known: {', '.join(sorted(TASKS))})")
    return TASKS[name]


def task_for(path: str, task: str | None) -> Task:
    """The task of a benchmark name, or `task` (data.task), or for a local file the task of the benchmark
    its file name contains (tiny_POPE.tsv: yorn), else the default."""
    spec = benchmark_spec(path)
    if task is not None:
        chosen = get_task(task)
        if spec is not None and spec.task != chosen.name:
            raise DdpEvalError(f"data.task={task} but benchmark {path} is a {spec.task} benchmark; "
                               "leave data.task unset for a benchmark name")
        return chosen
    named = spec or benchmark_spec(benchmark_in_name(path.replace("\\", "/").rsplit("/", 1)[-1]) or "")
    return get_task(named.task if named is not None else DEFAULT_TASK)
