"""`ddp_eval doctor`: what this machine and launch will give each rank, and settings known to break."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import yaml

from ddp_eval.distributed.group import read_env
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.common.triton_attention import MEASURED_HEAD_DIMS
from ddp_eval.models.common.vision_attention import fa4_problem, triton_problem
from ddp_eval.store.manifest import git_commit, versions


def _line(status: str, text: str) -> str:
    return f"[{status:>4}] {text}"


def report(config: Path | None, overrides: list[str]) -> tuple[list[str], int]:
    """Lines to print and the number of errors."""
    import torch

    lines, errors = [], 0
    found = versions()
    lines.append(_line("ok", "versions: " + ", ".join(f"{k} {v}" for k, v in found.items() if v)
                       + f"; ddp_eval commit {git_commit() or 'unknown'}"))
    cuda = torch.cuda.is_available()
    if cuda:
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
        lines.append(_line("ok", f"CUDA {torch.version.cuda}, NCCL {nccl}, {torch.cuda.device_count()} GPU(s) visible"))
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            lines.append(_line("ok", f"  cuda:{i} {torch.cuda.get_device_name(i)}, "
                                     f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"))
    else:
        lines.append(_line("ok", f"no CUDA (torch {torch.__version__}): ranks run on the CPU with gloo"))
    lines.append(_line("ok", f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"))
    lines.append(bytecode_line(sys.flags.dont_write_bytecode, _has_bytecode(torch.__file__)))

    rank, world, local = read_env(os.environ)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world if "RANK" in os.environ else 1))
    gpus = torch.cuda.device_count() if cuda else 0
    mapping = ", ".join(f"local rank {r} -> {f'cuda:{r}' if cuda else 'cpu'}" for r in range(local_world))
    lines.append(_line("ok", f"launch: rank {rank} of {world}, {local_world} process(es) on this node: {mapping}"))
    if cuda and local_world > gpus:
        errors += 1
        lines.append(_line("FAIL", f"{local_world} processes on this node but {gpus} GPU(s): start at most one "
                                   "process per GPU (torchrun --nproc_per_node)"))
    # flash_attn_2_cuda is FlashAttention-2's kernel module; flash-attn-4 also installs a flash_attn package.
    attn = ["eager", "sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn_2_cuda") else [])
    lines.append(_line("ok", f"attention implementations: {', '.join(attn)}"
                             + ("" if "flash_attention_2" in attn else " (flash_attn not installed)")))
    varlen = importlib.util.find_spec("torch.nn.attention.varlen") is not None
    lines.append(_line("ok", "vision attention: packed varlen_attn " + (
        "available (auto's kernel on CUDA in bf16/fp16 where the Triton one is not used)" if varlen
        else f"not in torch {torch.__version__}; per-image sdpa")))
    fa4 = fa4_problem()
    lines.append(_line("ok", "vision attention fa4 (FlashAttention-4): " + (
        "available" if fa4 is None else f"not usable here: {fa4}")))
    kernel = triton_problem()
    gpus = range(torch.cuda.device_count())
    hopper = kernel is None and torch.version.hip is None and all(
        torch.cuda.get_device_capability(d)[0] == 9 for d in gpus)
    lines.append(_line("ok", "vision attention triton (this package's kernel, auto's on Hopper): " + (
        f"not usable here: {kernel}" if kernel is not None
        else f"available; auto runs it on these GPUs at head dims {', '.join(map(str, MEASURED_HEAD_DIMS))}"
        if hopper else "available; auto keeps varlen_attn on these GPUs (not Hopper)")))
    if config is not None:
        more_lines, more_errors = _check_config(config, overrides)
        lines += more_lines
        errors += more_errors
    return lines, errors


def _has_bytecode(source: str) -> bool:
    """Whether Python has the compiled form of `source` where it would read it (its __pycache__ or
    PYTHONPYCACHEPREFIX)."""
    try:
        return Path(importlib.util.cache_from_source(source)).exists()
    except (NotImplementedError, ValueError):
        return False


def bytecode_line(dont_write: bool, torch_compiled: bool) -> str:
    """The doctor's line on Python's bytecode cache: where none is written and torch has none, every
    process compiles the sources it imports (run 29 on an H200 machine: 25 s of imports instead of 11)."""
    if not dont_write:
        return _line("ok", "Python bytecode: written and reused")
    if torch_compiled:
        return _line("ok", "Python bytecode: not written (PYTHONDONTWRITEBYTECODE or -B), the installed one is used")
    return _line("warn", "Python bytecode: not written (PYTHONDONTWRITEBYTECODE or -B) and torch has none: every "
                         "process compiles its imports from source, ~14 s more before the first batch; unset "
                         "PYTHONDONTWRITEBYTECODE (with PYTHONPYCACHEPREFIX=<a writable folder> if the packages' "
                         "folders are read-only)")


def _check_config(config: Path, overrides: list[str]) -> tuple[list[str], int]:
    from ddp_eval.config import load_config

    lines, errors = [], 0
    if config.is_file() and "device_map" in config.read_text(encoding="utf-8", errors="replace"):
        raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        if _has_key(raw, "device_map"):
            errors += 1
            lines.append(_line("FAIL", f"{config}: device_map is set; with more than one process 'auto' splits every "
                                       "replica over all GPUs and ranks collide. ddp_eval puts one full replica on "
                                       "cuda:<LOCAL_RANK>: remove the key"))
    try:
        cfg = load_config(config, overrides)
    except DdpEvalError as err:
        return lines + [_line("FAIL", f"config: {err}")], errors + 1
    lines.append(_line("ok", f"config {config} is valid"))
    if cfg.model.vision_attention == "fa4" and (problem := fa4_problem()) is not None:
        errors += 1
        lines.append(_line("FAIL", f"model.vision_attention=fa4: {problem}; install flash-attn-4 on a Hopper or "
                                   "Blackwell machine, or use model.vision_attention=varlen"))
    if cfg.model.vision_attention == "triton" and (problem := triton_problem()) is not None:
        errors += 1
        lines.append(_line("FAIL", f"model.vision_attention=triton: {problem}; use model.vision_attention=varlen"))
    try:
        from transformers import AutoConfig

        from ddp_eval.models.base import resolve_speed
        from ddp_eval.models.registry import family_for
        from ddp_eval.run.job import local_device_type, transformers_version
        from ddp_eval.tasks.base import TaskSettings

        family = family_for(Path(cfg.model.path), cfg.model.family)
        model_cfg = AutoConfig.from_pretrained(cfg.model.path)
        family.load_processor(cfg.model, family.pixels(cfg, TaskSettings()))
        lines.append(_line("ok", f"model {cfg.model.path}: {model_cfg.model_type} config and processor load; "
                                 f"model family {family.name}"))
        offered = ", ".join(f.key for f in family.features) or "none"
        lines.append(_line("ok", f"  speed features of the {family.name} family: {offered}"
                                 + (f"; it runs the plain path (transformers' generate): {family.plain_path}"
                                    if family.plain_path else "")))
        version = transformers_version()
        for feature in family.features:
            tested = ("no transformers internals patched" if feature.tested is None else
                      f"tested on transformers {feature.tested[0]}-{feature.tested[1]}"
                      + ("" if feature.tested_on(version) else f", NOT on {version}: plain path"))
            lines.append(_line("ok", f"  model.{feature.key}: {feature.what} ({tested})"))
        device = local_device_type()
        speed = resolve_speed(cfg, family, version, device)
        lines.append(_line("ok", f"  this config uses on {device}: " + ", ".join(
            f"{k}={v}" for k, v in vars(speed).items())))
    except (DdpEvalError, OSError, ValueError) as err:
        errors += 1
        lines.append(_line("FAIL", f"model {cfg.model.path}: {err}"))
    from ddp_eval.tasks.load import local_path

    data = local_path(cfg.data)
    if data.exists():
        lines.append(_line("ok", f"data {data} exists"))
    elif cfg.data.path != str(data):
        lines.append(_line("warn", f"data {cfg.data.path} is not downloaded yet (rank 0 fetches it into {data})"))
    else:
        errors += 1
        lines.append(_line("FAIL", f"data.path {data} does not exist"))
    return lines, errors


def _has_key(node, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_has_key(v, key) for v in node.values())
    return False
