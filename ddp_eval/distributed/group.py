"""The process group and this rank's device. Nothing else in ddp_eval reads torchrun's env vars.

Without RANK/WORLD_SIZE we run as one process with no process group. With CUDA each rank uses
`cuda:<LOCAL_RANK>` and NCCL; without CUDA, gloo on the CPU.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
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
    hosts: tuple[str, ...] = ()  # per rank, its host name (gathered at start-up)
    control: Any = None  # a gloo group for start-up checkpoints (None: the default group is gloo)

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
    hosts: tuple[str, ...] = (socket.gethostname(),)
    control = None
    if initialized:
        # A gloo group of its own for start-up checkpoints: monitored_barrier names the ranks that do not
        # arrive, and NCCL has no such barrier.
        control = torch_dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
        gathered: list[Any] = [None] * world
        torch_dist.all_gather_object(gathered, hosts[0], group=control)
        hosts = tuple(gathered)
    info = DistInfo(rank=rank, world_size=world, local_rank=local, device=device, initialized=initialized,
                    hosts=hosts, control=control)
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


def checkpoint(info: DistInfo, step: str, timeout_s: float) -> None:
    """Every rank reaches `step` within `timeout_s`; else an error naming the ranks that did not and their
    hosts (rank 0 knows which), instead of a collective's raw timeout later."""
    if not info.initialized:
        return
    try:
        torch_dist.monitored_barrier(group=info.control, timeout=datetime.timedelta(seconds=timeout_s),
                                     wait_all_ranks=True)
    except RuntimeError as err:
        found = re.search(r"Ranks? ([\d, ]+) failed to pass", str(err)) if info.is_main else None
        late = [int(r) for r in re.findall(r"\d+", found.group(1))] if found else []
        named = ", ".join(f"{r} on {info.hosts[r] if r < len(info.hosts) else '?'}" for r in late)
        who = f"rank(s) {named}" if named else "rank 0 or another rank"
        raise DdpEvalError(f"{who} did not reach start-up step '{step}' within {timeout_s:.0f} s "
                           "(run.dist_timeout_s): stopped or hung there; their logs say why. Nothing was predicted "
                           "in this step; re-run the same command to resume") from None


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.initialized:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]
