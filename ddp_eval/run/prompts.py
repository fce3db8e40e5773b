"""`ddp_eval prompts`: per row, the exact prompt the model family is given (images and text in order,
before the chat template) and, asked for, the chat-template text the model reads; no weights loaded.

Each line is one JSON object: {"benchmark", "index" (the file's own index, a string for HallusionBench),
"messages": [{"type": "image"}, {"type": "text", "text": "..."}], "rendered" (with --render)}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from ddp_eval.config import Config
from ddp_eval.data.cells import integer_index
from ddp_eval.models.registry import family_for
from ddp_eval.tasks.load import download_benchmark, load_benchmark
from ddp_eval.tasks.registry import benchmark_spec, get_task


def messages(content: list[dict]) -> list[dict]:
    return [{"type": "image"} if item["type"] == "image" else {"type": "text", "text": item["text"]}
            for item in content]


def prompt_lines(cfg: Config, limit: int | None = None, render: bool = False) -> Iterator[dict]:
    """The lines for every benchmark of the config (data.path, or each of data.benchmarks)."""
    family = family_for(Path(cfg.model.path), cfg.model.family)
    limits = [n for n in (limit, cfg.data.limit) if n is not None]
    for name in cfg.data.benchmarks or [cfg.data.path]:
        data = dataclasses.replace(cfg.data, path=name, benchmarks=None, limit=min(limits) if limits else None)
        if benchmark_spec(name) is not None:
            download_benchmark(name, data.cache_dir, data.mirror, data.md5)
        benchmark = load_benchmark(data)
        task = get_task(benchmark.task)
        processor = None
        if render:
            pixels = family.pixels(cfg, task.settings(benchmark.name), task.rules(benchmark.name))
            processor = family.load_processor(cfg.model, pixels)
        for sample, index in zip(benchmark.samples, benchmark.table["index"]):
            content = family.content(task, sample, benchmark.name)
            number = integer_index(index)
            line = {"benchmark": benchmark.name, "index": number if number is not None else str(index),
                    "messages": messages(content)}
            if processor is not None:
                line["rendered"] = family.render(processor, content)
            yield line
