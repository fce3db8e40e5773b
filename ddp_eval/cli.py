"""Command line: `python -m ddp_eval [run] --config X [--set k=v ...]`, `score PATH [--benchmark NAME]`,
`prompts --config X`, `benchmarks`, `doctor`.

User errors (DdpEvalError) are printed as one line without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from ddp_eval.distributed.env import env_rank, launched_by_torchrun
from ddp_eval.distributed.launcher import end_with_parent
from ddp_eval.distributed.stop import Stopped, stop_at_once_on_signals
from ddp_eval.errors import DdpEvalError

PROCESS_START = time.perf_counter()  # torch and transformers load later, inside the commands

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddp_eval", description="Data-parallel VLM evaluation (torchrun-ready).")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="evaluate a model on a benchmark (the default command)")
    _run_args(run)
    score = sub.add_parser("score", help="re-score an existing predictions file without a model",
                           description="re-score an existing predictions file without a model")
    score.add_argument("path", type=Path, help="predictions TSV/XLSX (ours, or VLMEvalKit's with a prediction column)")
    score.add_argument("--output-dir", type=Path, default=None, help="where to write (default: beside the file)")
    score.add_argument("--benchmark", default=None,
                       help="the benchmark whose rules score the file (default: the longest known name the file "
                            "name contains, as VLMEvalKit picks it; else an MMBench-style mcq file)")
    score.add_argument("--task", default=None, help="the task that scores the file (default: the benchmark's, "
                                                    "else mcq)")
    prompts = sub.add_parser("prompts", help="write each row's prompt as the model family is given it (JSON lines)",
                             description="write each row's prompt as the model family is given it (JSON lines)")
    prompts.add_argument("--config", type=Path, help="YAML config file")
    prompts.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    prompts.add_argument("--limit", type=_positive, default=None, help="only the first N rows of each benchmark")
    prompts.add_argument("--render", action="store_true",
                         help="add the chat-template text the model reads (loads the processor, not the weights)")
    prompts.add_argument("--out", type=Path, default=None, help="write to this file (default: standard output)")
    sub.add_parser("benchmarks", help="list the benchmark names data.path takes",
                   description="list the benchmark names data.path takes")
    doctor = sub.add_parser("doctor", help="check versions, GPUs, the rank -> device map, the model and the config",
                            description="check versions, GPUs, the rank -> device map, the model and the config")
    doctor.add_argument("--config", type=Path, help="YAML config file to check")
    doctor.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set run.batch_size=16 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    parser.add_argument("--retry-failed", action="store_true",
                        help="predict again the rows recorded as failed (bad image, out of memory)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (rows and batches per rank, largest batch, outputs, resume) and exit "
                             "without loading weights")
    parser.add_argument("--world-size", type=int, default=None,
                        help="with --dry-run: plan for this many ranks (default: torchrun's WORLD_SIZE or 1)")


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    action = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def _print_help(parser: argparse.ArgumentParser) -> None:
    """The run command's options first (it is the default command), then the other commands."""
    run = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
    print(run.choices["run"].format_help().replace("usage: ddp_eval run", "usage: ddp_eval [run]", 1))
    print("other commands (ddp_eval COMMAND --help for each):")
    for name, sub in run.choices.items():
        if name != "run":
            print(f"  {name:10s} {sub.description or ''}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if launched_by_torchrun(os.environ):
        end_with_parent()  # torchrun's ranks run in sessions of their own: end with it, not after it
    parser = build_parser()
    if argv[:1] in (["-h"], ["--help"]):
        _print_help(parser)
        return
    if not argv or argv[0] not in _commands(parser):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.command == "run" and args.config is None and not args.overrides:
        print("ddp_eval: error: no --config given; usage: python -m ddp_eval --config CONFIG.yaml [--set key=value "
              "...] (python -m ddp_eval --help lists the options)", file=sys.stderr)
        sys.exit(2)
    stop_at_once_on_signals()
    try:
        if args.command == "score":
            _score(args)
        elif args.command == "prompts":
            _prompts(args)
        elif args.command == "benchmarks":
            print(_benchmarks())
        elif args.command == "doctor":
            _doctor(args)
        else:
            _run(args)
    except DdpEvalError as err:
        if env_rank(os.environ) == 0:  # every rank meets the same user error: say it once
            print(f"ddp_eval: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Stopped as err:
        print(f"ddp_eval: {err}", file=sys.stderr, flush=True)
        _leaving_on_a_signal()
        sys.exit(128 + err.signum)
    except KeyboardInterrupt:
        print("ddp_eval: interrupted; predictions written so far are kept, re-run to resume", file=sys.stderr)
        _leaving_on_a_signal()
        sys.exit(130)


def _leaving_on_a_signal() -> None:
    """The stop is decided and said: another Ctrl-C during the interpreter's teardown would only raise inside
    torch's exit handlers and print their traceback."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _run(args: argparse.Namespace) -> None:
    from ddp_eval.config import load_config
    from ddp_eval.distributed.group import distributed, read_env
    from ddp_eval.distributed.log import setup_logging
    from ddp_eval.run.runner import Options, run

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from ddp_eval.run.dryrun import describe

        world = args.world_size or read_env(os.environ)[1]
        print(describe(cfg, world))
        return
    with distributed(cfg.run.dist_timeout_s) as info:
        setup_logging(info.rank, info.world_size, quiet=args.quiet)
        run(cfg, info, Options(show_progress=not args.quiet, retry_failed=args.retry_failed,
                                 process_start=PROCESS_START, fail_on_a_failed_benchmark=True))


def _score(args: argparse.Namespace) -> None:
    from ddp_eval.data.tsv import read_table
    from ddp_eval.distributed.log import setup_logging
    from ddp_eval.report.finish import finish
    from ddp_eval.tasks.registry import DEFAULT_TASK, benchmark_in_name, benchmark_spec, get_task, unknown_benchmark

    setup_logging(0, 1)
    if not args.path.is_file():
        raise DdpEvalError(f"predictions file not found: {args.path}")
    if args.benchmark is not None and benchmark_spec(args.benchmark) is None:
        raise unknown_benchmark(args.benchmark, "--benchmark")
    benchmark = args.benchmark or benchmark_in_name(args.path.name)
    spec = benchmark_spec(benchmark) if benchmark else None
    if args.task is not None and spec is not None and spec.task != args.task:
        raise DdpEvalError(f"--task {args.task}, but {benchmark} is a {spec.task} benchmark; leave --task out")
    ran = _run_record(args.path) if benchmark is None else {}
    task = get_task(args.task or (spec.task if spec else ran.get("task") or DEFAULT_TASK))
    table = read_table(args.path)
    out = args.output_dir or args.path.parent / f"{args.path.stem}_scored"
    finish(task, table, out, title=args.path.name, benchmark=benchmark or ran.get("benchmark") or args.path.stem)
    print(f"results in {out}")


def _run_record(path: Path) -> dict:
    """For a run's own predictions.tsv: the benchmark and task its run.json names (else nothing)."""
    import json

    record = path.parent / "run.json"
    if path.name != "predictions.tsv" or not record.is_file():
        return {}
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: data[k] for k in ("benchmark", "task") if isinstance(data, dict) and isinstance(data.get(k), str)}


def _prompts(args: argparse.Namespace) -> None:
    import json

    from ddp_eval.config import load_config
    from ddp_eval.distributed.log import setup_logging
    from ddp_eval.run.prompts import prompt_lines

    setup_logging(0, 1, quiet=True)
    if args.config is None and not args.overrides:
        raise DdpEvalError("prompts: no --config given; usage: python -m ddp_eval prompts --config CONFIG.yaml")
    cfg = load_config(args.config, args.overrides)
    lines = (json.dumps(line, ensure_ascii=False) + "\n" for line in prompt_lines(cfg, args.limit, args.render))
    if args.out is None:
        sys.stdout.writelines(lines)
        return
    from ddp_eval.store.atomic import atomic_write_text

    if args.out.is_dir():
        raise DdpEvalError(f"prompts --out {args.out}: a directory; name the file to write, e.g. "
                           f"{args.out / 'prompts.jsonl'}")
    try:
        atomic_write_text(args.out, "".join(lines))
    except (NotADirectoryError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise DdpEvalError(f"prompts --out {args.out}: cannot write there ({err.strerror or err})") from None
    print(f"prompts in {args.out}")


def _benchmarks() -> str:
    from ddp_eval.tasks.registry import BENCHMARKS, get_task

    lines = [f"{'benchmark':22s} {'task':5s} {'headline metric':30s} rows"]
    for spec in BENCHMARKS.values():
        metric = get_task(spec.task).primary_name(spec.name)
        lines.append(f"{spec.name:22s} {spec.task:5s} {metric:30s} {spec.rows or 'unknown'}")
    lines.append("rows: VLMEvalKit's published TSV; data.path takes a name (downloaded once, md5-checked) or a file")
    return "\n".join(lines)


def _doctor(args: argparse.Namespace) -> None:
    from ddp_eval.run.doctor import report

    lines, errors = report(args.config, args.overrides)
    print("\n".join(lines))
    if errors:
        raise DdpEvalError(f"doctor found {errors} problem(s), marked FAIL above")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def entry() -> None:
    """`python -m ddp_eval` and the `ddp-eval` script: `main()`, then, when it returned, leave without the
    interpreter's teardown (freeing every module torch and transformers loaded, CUDA's context): 1.3 s on a
    CPU and ~2 s on an H200 machine after the results are written. By then every file the command wrote is
    closed (shards, predictions, metrics, report) and the process group is gone; only the streams and the
    log handlers are flushed. Errors and signals exit the usual way, and so does a profiled or traced run
    (cProfile and coverage write their files at the interpreter's exit)."""
    main()
    if _observed():
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it anyway
            pass
    os._exit(0)


def _observed() -> bool:
    """A tracer or profiler is watching this process (sys.settrace / setprofile, or a sys.monitoring tool:
    Python 3.12's cProfile and coverage use that)."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(tool) is not None for tool in range(6))
