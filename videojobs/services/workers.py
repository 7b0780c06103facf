"""The worker registry: one row per daemon group, written by its rank 0; a starting daemon
retires its dead predecessors on this host and rescues their jobs at once."""
from __future__ import annotations

import logging
from dataclasses import astuple
from typing import Any, Callable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from videojobs.models import InferenceWorker, JobStatus, VideoJob, WorkerState
from videojobs.services.sweeps import RescueReport, rescue_jobs

logger = logging.getLogger(__name__)


@transaction.atomic
def retire_dead_predecessors(*, name: str, host: str, pid: int, alive: Callable[[int], bool]) -> RescueReport:
    """A daemon starting on this host: the rows of daemons here that died without a word (same
    name, or the default host:pid names; their pid gone) turn lost, and their running jobs are
    rescued now rather than when their leases lapse. So is any running job under our own name:
    we have not claimed one yet, so it is a dead predecessor's."""
    now = timezone.now()
    dead = [
        worker.name
        for worker in InferenceWorker.objects.select_for_update().filter(host=host).exclude(
            state__in=[WorkerState.STOPPED, WorkerState.LOST]
        )
        if worker.pid != pid and (worker.name == name or worker.name.startswith(f"{host}:")) and not alive(worker.pid)
    ]
    InferenceWorker.objects.filter(name__in=dead).update(
        state=WorkerState.LOST, current_job=None, detail=f"found dead by its successor at {now:%Y-%m-%d %H:%M:%S} UTC"
    )
    orphans = list(VideoJob.objects.select_for_update().filter(status=JobStatus.IN_PROGRESS, worker__in=[*dead, name]))
    report = rescue_jobs(orphans, now)
    if dead or orphans:
        logger.warning("retired dead workers %s; their running jobs: %d requeued, %d failed, %d cancelled",
                       dead, *astuple(report))
    return report


@transaction.atomic
def register_worker(
    *, name: str, host: str, pid: int, world_size: int, topology: dict[str, Any], device: str, model: str
) -> InferenceWorker:
    now = timezone.now()
    worker, _ = InferenceWorker.objects.update_or_create(
        name=name,
        defaults={
            "host": host,
            "pid": pid,
            "world_size": world_size,
            "topology": topology,
            "device": device,
            "model": model,
            "state": WorkerState.LOADING,
            "current_job": None,
            "heartbeat_at": now,
            "detail": "",
        },
    )
    return worker


@transaction.atomic
def update_worker(
    *,
    name: str,
    state: str,
    current_job_id: int | None = None,
    detail: str = "",
    job_done: bool = False,
    topology: dict[str, Any] | None = None,
    loras: list[dict[str, Any]] | None = None,
) -> None:
    if state not in WorkerState.values:
        raise ValueError(f"unknown worker state {state!r}")
    changes: dict[str, Any] = {
        "state": state,
        "current_job_id": current_job_id,
        "heartbeat_at": timezone.now(),
        "detail": detail,
    }
    if job_done:
        changes["jobs_done"] = F("jobs_done") + 1
    if topology is not None:
        changes["topology"] = topology
    if loras is not None:
        changes["loras"] = loras  # the adapters this worker holds: what jobs it may claim
    InferenceWorker.objects.filter(name=name).update(**changes)


@transaction.atomic
def worker_heartbeat(*, name: str) -> None:
    InferenceWorker.objects.filter(name=name).update(heartbeat_at=timezone.now())


@transaction.atomic
def record_worker_resources(*, name: str, memory: dict[str, Any], quantization: dict[str, Any]) -> None:
    """The daemon's weight bytes per rank (and its last job's peaks), and the quantization it runs."""
    InferenceWorker.objects.filter(name=name).update(memory=memory, quantization=quantization)
