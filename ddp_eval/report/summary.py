"""A suite's summary at the top of its output dir: one row per benchmark with its headline metric as
VLMEvalKit reports it, rows, failed rows, time, and whether it ran (summary.md, .csv, .json)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ddp_eval.store.atomic import atomic_write_text


@dataclass(frozen=True)
class SuiteRow:
    benchmark: str
    task: str
    metric: str | None  # the headline metric's name, e.g. CircularEval, F1, Final Score
    value: float | None
    rows: int
    failed_rows: int
    seconds: float  # the slowest rank's time on this benchmark's batches
    status: str  # ok, or why it did not run / was not scored
    folder: Path


def _value(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def write_summary(out: Path, rows: list[SuiteRow]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    records = [{"benchmark": r.benchmark, "task": r.task, "metric": r.metric,
                "value": None if r.value is None or math.isnan(r.value) else round(r.value, 4), "rows": r.rows,
                "failed_rows": r.failed_rows, "seconds": round(r.seconds, 2), "status": r.status,
                "folder": str(r.folder)} for r in rows]
    paths = [out / "summary.json", out / "summary.csv", out / "summary.md"]
    atomic_write_text(paths[0], json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["benchmark", "task", "metric", "value", "rows", "failed_rows", "seconds", "status"])
    for r in rows:
        writer.writerow([r.benchmark, r.task, r.metric or "", _value(r.value), r.rows, r.failed_rows,
                         f"{r.seconds:.1f}", r.status])
    atomic_write_text(paths[1], buf.getvalue())
    lines = ["# Suite summary", "", "| benchmark | metric | value | rows | failed rows | time (s) | status |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        link = f"[{r.benchmark}]({r.folder.name}/report.md)" if r.status == "ok" else r.benchmark
        lines.append(f"| {link} | {r.metric or ''} | {_value(r.value)} | {r.rows} | {r.failed_rows} | "
                     f"{r.seconds:.1f} | {r.status.replace('|', '/')} |")
    atomic_write_text(paths[2], "\n".join(lines) + "\n")
    print("\n".join(["suite summary:"] + [f"  {r.benchmark:28s} {r.metric or '':16s} {_value(r.value):>8s}  "
                                         f"{r.rows} rows, {r.failed_rows} failed, {r.seconds:.1f} s, {r.status}"
                                         for r in rows]), flush=True)
    return paths
