"""The distributed runtime of one daemon group: process group, control channel, stop flags.

Two channels:
- the *tensor* group (NCCL on CUDA, HCCL on Ascend, gloo on the CPU) for model collectives;
- the *control* group, always gloo on the CPU, for job hand-off and per-step decisions.
  It can sit idle for hours between jobs: rank 0 sends an idle tick every
  DAEMON_IDLE_TICK_SECONDS, well inside the group's timeout, so no collective ever waits
  long enough to trip it and no accelerator stream is held by an idle wait.

Every synchronisation point during a job is the same collective (an all-reduce MAX of one
int64 flag on the control group). A rank that fails contributes ERROR to whichever sync
the others are at, and the job ends for every rank at that same sync, so the group stays
in step whatever went wrong where.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from enum import IntEnum
from typing import Any

import torch
import torch.distributed as dist

from inference.devices import DeviceSpec, bind_device, resolve_device

logger = logging.getLogger(__name__)


class StopFlag(IntEnum):
    """Per-step decisions, ordered by severity: the all-reduce keeps the most severe."""

    CONTINUE = 0
    CANCEL = 1  # the user cancelled the job
    LOST = 2  # the job is no longer this attempt's (rescued, or ended by a sweep)
    TIMEOUT = 3  # TASK_TIMEOUT passed
    SHUTDOWN = 4  # the daemon is shutting down and the job must go back to the queue
    ERROR = 5  # some rank raised


class GroupBroken(RuntimeError):
    """A collective failed: a rank died or timed out. The daemon must exit non-zero."""


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: DeviceSpec
    control_group: Any = field(default=None, repr=False)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_runtime(*, device: str = "auto", timeout_seconds: int = 1800) -> Runtime:
    """Read torchrun's environment, pick and bind the device, create both groups."""
    # 1. Rank layout from torchrun (absent for a plain single-process start).
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    # 2. The device this rank drives.
    spec = resolve_device(device, local_rank=local_rank)
    bind_device(spec)
    runtime = Runtime(rank=rank, world_size=world_size, local_rank=local_rank, device=spec)
    if world_size == 1:
        return runtime
    # 3. The tensor group on the accelerator's backend, then a gloo control group beside it.
    timeout = timedelta(seconds=timeout_seconds)
    kwargs: dict[str, Any] = {"backend": spec.dist_backend, "timeout": timeout}
    if spec.kind == "cuda":
        kwargs["device_id"] = spec.torch_device
    dist.init_process_group(**kwargs)
    runtime.control_group = (
        dist.group.WORLD if spec.dist_backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    )
    return runtime


def shutdown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_message(runtime: Runtime, message: dict[str, Any] | None) -> dict[str, Any]:
    """Rank 0's message (a picklable dict) reaches every rank."""
    if not runtime.distributed:
        assert message is not None
        return message
    box = [message if runtime.is_leader else None]
    try:
        dist.broadcast_object_list(box, src=0, group=runtime.control_group)
    except Exception as exc:  # noqa: BLE001 - any collective failure means the group is gone
        raise GroupBroken(f"control broadcast failed on rank {runtime.rank}: {exc}") from exc
    return box[0]


def agree_flag(runtime: Runtime, local: int) -> StopFlag:
    """Every rank's flag, reduced to the most severe one, known to every rank."""
    if not runtime.distributed:
        return StopFlag(local)
    flag = torch.tensor([int(local)], dtype=torch.int64)  # on the CPU: the control group is gloo
    try:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=runtime.control_group)
    except Exception as exc:  # noqa: BLE001
        raise GroupBroken(f"step agreement failed on rank {runtime.rank}: {exc}") from exc
    return StopFlag(int(flag.item()))


def gather_objects(runtime: Runtime, obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    if not runtime.distributed:
        return [obj]
    out: list[Any] = [None] * runtime.world_size
    try:
        dist.all_gather_object(out, obj, group=runtime.control_group)
    except Exception as exc:  # noqa: BLE001
        raise GroupBroken(f"gather failed on rank {runtime.rank}: {exc}") from exc
    return out


def barrier(runtime: Runtime) -> None:
    if not runtime.distributed:
        return
    try:
        dist.barrier(group=runtime.control_group)
    except Exception as exc:  # noqa: BLE001
        raise GroupBroken(f"barrier failed on rank {runtime.rank}: {exc}") from exc
