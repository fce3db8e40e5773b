"""The batch shape of a run on this device: rows per batch and the token budget (rows x padded length).

`run.batch_size` and `run.batch_tokens` are caps the user may set. Left at null, a CUDA run takes up to
64 rows (beyond that the CPU workers preparing the images, not the GPU, set the pace: bench/RESULTS.md,
run 23) and as many prompt tokens as half the device's free memory holds after the weights, at a
generous per-token estimate from config.json; a CPU run takes 8 rows and no token budget. Every rank
uses rank 0's figures, so the plan, which depends on them, is the same on every rank.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ddp_eval.config import Config
from ddp_eval.distributed.group import DistInfo, broadcast_object
from ddp_eval.models.checkpoint import bytes_per_prompt_token, weights_bytes

log = logging.getLogger(__name__)

CUDA_ROWS, CPU_ROWS = 64, 8
SHARE_OF_FREE = 0.5
RESERVE = 2 * 2**30  # CUDA context, kernels' workspaces, the allocator's fragments
MIN_TOKENS = 4096


def batch_rows(cfg: Config, device_type: str) -> int:
    return cfg.run.batch_size or (CUDA_ROWS if device_type == "cuda" else CPU_ROWS)


def token_budget(cfg: Config, info: DistInfo) -> int | None:
    """run.batch_tokens, or on CUDA the budget that fits rank 0's free memory; None: rows alone."""
    if cfg.run.batch_tokens is not None or info.device.type != "cuda":
        return cfg.run.batch_tokens
    budget = None
    if info.is_main:
        try:
            budget = _fitting(cfg, info)
        except (RuntimeError, OSError) as err:  # every rank waits for this figure: never fail before sending it
            log.warning("batch token budget: none (%s); rows alone cap batches", err)
    return broadcast_object(info, budget)


def _fitting(cfg: Config, info: DistInfo) -> int | None:
    import torch

    model_dir = Path(cfg.model.path)
    per_token = bytes_per_prompt_token(model_dir, 4 if cfg.model.dtype == "float32" else 2)
    if per_token is None:
        log.info("batch token budget: none (config.json does not give the model's sizes); rows alone cap batches")
        return None
    free, _ = torch.cuda.mem_get_info(info.device)
    usable = free - weights_bytes(model_dir) - RESERVE
    budget = max(MIN_TOKENS, int(usable * SHARE_OF_FREE / per_token) // 1024 * 1024)
    log.info("batch token budget: %d prompt tokens (%.1f GiB free before the weights, ~%d KiB per token); "
             "set run.batch_tokens to change it", budget, free / 2**30, per_token // 1024)
    return budget
