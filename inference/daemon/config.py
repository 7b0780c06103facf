"""What the daemon is told to run (its settings) and what its group actually runs."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.parallel.context import ParallelContext
from inference.parallel.topology import TopologyRequest


@dataclass
class DaemonConfig:
    worker_name: str
    ckpt_dir: Path
    tiny_model: bool
    output_dir: Path
    media_root: Path
    lease_seconds: int
    poll_seconds: float
    idle_tick_seconds: float
    task_timeout: int
    fps: int
    min_free_bytes: int = 0  # MIN_FREE_DISK_MB on OUTPUT_DIR's disk before a job runs
    max_jobs: int | None = None  # stop after this many jobs (benchmarks and tests)

    @classmethod
    def from_settings(cls, *, max_jobs: int | None = None) -> "DaemonConfig":
        tiny = not settings.MODEL_CKPT_DIR
        return cls(
            worker_name=os.environ.get("WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}",
            ckpt_dir=Path(settings.TINY_CKPT_DIR if tiny else settings.MODEL_CKPT_DIR),
            tiny_model=tiny,
            output_dir=Path(settings.OUTPUT_DIR),
            media_root=Path(settings.MEDIA_ROOT),
            lease_seconds=settings.LEASE_SECONDS,
            poll_seconds=settings.DAEMON_POLL_SECONDS,
            idle_tick_seconds=settings.DAEMON_IDLE_TICK_SECONDS,
            task_timeout=settings.TASK_TIMEOUT,
            fps=settings.VIDEO_FPS,
            min_free_bytes=settings.MIN_FREE_DISK_MB * 2**20,
            max_jobs=max_jobs,
        )


def requested_topology() -> TopologyRequest:
    return TopologyRequest.from_settings(settings)


def running_topology(ctx: ParallelContext, attention_backend: str) -> dict[str, Any]:
    """What this group actually runs, as reported in the registry, /health and every job."""
    return {**ctx.topology.as_dict(), "device": ctx.device.kind, "attention_backend": attention_backend}
