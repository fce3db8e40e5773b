"""Task names -> tasks, and benchmark names -> their task and the file VLMEvalKit publishes (URL, md5).

To add a benchmark family: write its folder under tasks/ and add its task to TASKS. To add a
benchmark of a known family: add one line to BENCHMARKS.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.base import Task
from ddp_eval.tasks.mcq.task import MultipleChoiceTask

TASKS: dict[str, Task] = {task.name: task for task in (MultipleChoiceTask(),)}
DEFAULT_TASK = "mcq"  # a local file without data.task


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    task: str
    url: str
    md5: str


_MMBENCH = "https://opencompass.openxlab.space/utils/benchmarks/MMBench"

BENCHMARKS: dict[str, BenchmarkSpec] = {spec.name: spec for spec in (
    BenchmarkSpec(name, "mcq", f"{_MMBENCH}/{name}.tsv", md5) for name, md5 in (
        ("MMBench_DEV_EN", "b6caf1133a01c6bb705cf753bb527ed8"),
        ("MMBench_TEST_EN", "6939fadb0ce626fefc0bdc9c64efc528"),
        ("MMBench_DEV_CN", "08b8fc3324a5ed74155350f57be69fbd"),
        ("MMBench_TEST_CN", "7e1239baf0ee4c8b513e19705a0f317e"),
        ("MMBench_DEV_EN_V11", "30c05be8f2f347a50be25aa067248184"),
        ("MMBench_TEST_EN_V11", "8d1a704e791df6f5d9fb3ef782b65365"),
        ("MMBench_DEV_CN_V11", "593f9b5f6bea453d870a798b34ae4f37"),
        ("MMBench_TEST_CN_V11", "156e6569f9547afb16603eca16e85373"),
    )
)}


def benchmark_spec(name: str) -> BenchmarkSpec | None:
    return BENCHMARKS.get(name)


def get_task(name: str) -> Task:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DdpEvalError(f"data.task: unknown task {name!r}{hint} (known: {', '.join(sorted(TASKS))})")
    return TASKS[name]


def task_for(path: str, task: str | None) -> Task:
    """The task of a benchmark name, or `task` (data.task), or the default for a local file."""
    spec = benchmark_spec(path)
    if task is not None:
        chosen = get_task(task)
        if spec is not None and spec.task != chosen.name:
            raise DdpEvalError(f"data.task={task} but benchmark {path} is a {spec.task} benchmark; "
                               "leave data.task unset for a benchmark name")
        return chosen
    return get_task(spec.task if spec is not None else DEFAULT_TASK)
