"""The process group and this rank's device. Nothing else in ddp_eval reads torchrun's env vars.

Without RANK/WORLD_SIZE we run as one process with no process group. With CUDA each rank uses
`cuda:<LOCAL_RANK>` and NCCL; without CUDA, gloo on the CPU.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

from ddp_eval.errors import DdpEvalError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def read_env(env: Mapping[str, str]) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) when they are absent."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return 0, 1, 0
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise DdpEvalError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got {env.get('RANK')!r}, "
            f"{env.get('WORLD_SIZE')!r}, {env.get('LOCAL_RANK')!r}"
        ) from None
    if not 0 <= rank < world:
        raise DdpEvalError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world, local


def pick_device(local_rank: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DdpEvalError(
            f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "start at most one process per GPU"
        )
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def distributed(timeout_s: int) -> Iterator[DistInfo]:
    """Init the process group (if launched by torchrun), yield this rank's DistInfo, tear down."""
    rank, world, local = read_env(os.environ)
    device = pick_device(local)
    initialized = False
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        timeout = datetime.timedelta(seconds=timeout_s)
        store = _attempt_store(os.environ, rank, world, timeout)
        if store is not None:
            kwargs.update(store=store, rank=rank, world_size=world)
        torch_dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        initialized = True
    elif device.type == "cuda":
        torch.cuda.set_device(device)
    info = DistInfo(rank=rank, world_size=world, local_rank=local, device=device, initialized=initialized)
    try:
        yield info
    finally:
        if initialized:
            torch_dist.destroy_process_group()


def _attempt_store(env: Mapping[str, str], rank: int, world: int,
                   timeout: datetime.timedelta) -> torch_dist.Store | None:
    """Under `torchrun --max-restarts`, a store namespace of this restart attempt's own.

    The agent's store outlives a restart, and the process group's keys (gloo's peer addresses among
    them) would otherwise be read back from the failed attempt: the restarted ranks then try to
    connect to dead peers. None (plain env:// init) outside torchelastic.
    """
    attempt = env.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        return None
    host, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # the agent hosts the store
        base = torch_dist.TCPStore(host, port, world, is_master=False, timeout=timeout)
    else:
        base = torch_dist.TCPStore(host, port, world, is_master=rank == 0, timeout=timeout, multi_tenant=True)
    return torch_dist.PrefixStore(f"ddp_eval/attempt_{attempt}", base)


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.initialized:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]
