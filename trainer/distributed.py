"""Data-parallel training under torchrun; a no-op in a plain single process.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. With WORLD_SIZE > 1 (or `force=True` under torchrun,
which the GPU benchmark uses to exercise the path on one device) a process group is started, the
module is wrapped in DistributedDataParallel and each rank trains on its DistributedSampler shard.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ctloop.failures import Failure


@dataclass(frozen=True)
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    active: bool = False
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start(device: torch.device, *, force: bool = False) -> DistContext:
    """Join (or start) the process group when launched for more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1 and not (force and "MASTER_ADDR" in os.environ):
        return DistContext()
    if dist.is_initialized():
        return DistContext(dist.get_world_size(), dist.get_rank(), local_rank, active=True)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(world_size, rank, local_rank, active=True, owns_group=True)


def stop(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    if not ctx.active:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


class RankFailed(RuntimeError, Failure):
    """Rank 0 failed on a step the other ranks were waiting for; the message is its error."""


def from_main(ctx: DistContext, produce: Callable[[], str]) -> str:
    """Rank 0 runs `produce` (e.g. creating the MLflow run, or logging and scoring the model) and every rank
    gets its value. When it raises there, rank 0 says so before raising, and the other ranks raise
    `RankFailed` with its error at once rather than wait for rank 0's process to end or the group to time out."""
    if not ctx.active:
        return produce()
    if not ctx.is_main:
        ok, value = _broadcast(None)
        if not ok:
            raise RankFailed(f"rank 0 failed, so rank {ctx.rank} stops: {value}")
        return value
    try:
        value = produce()
    except BaseException as exc:
        with contextlib.suppress(Exception):  # a broken group: rank 0's own error is the one to raise
            _broadcast((False, f"{type(exc).__name__}: {exc}"))
        raise
    _broadcast((True, value))
    return value


def _broadcast(value: tuple[bool, str] | None) -> tuple[bool, str]:
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def select_device(requested: str | None = None, ctx: DistContext | None = None) -> torch.device:
    """CUDA (this rank's GPU under torchrun) when present, else CPU; `requested` overrides."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if ctx is None else ctx.local_rank
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
