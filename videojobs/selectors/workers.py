"""The inference workers as /health, /metrics and the admin read them: which are ready, their
state (stale when their heartbeat is too old), and the topology that actually runs."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Case, CharField, Count, F, Value, When
from django.utils import timezone

from videojobs.models import InferenceWorker, WorkerState


# What only operators see of a worker: where it runs and what it holds (host, pid, model path,
# the job it is running). Anonymous callers of /health and /metrics get the rest.
PRIVATE_WORKER_FIELDS = ("name", "host", "pid", "model", "current_job", "detail")


def worker_summary(*, now=None, private: bool = True) -> dict[str, Any]:
    now = now or timezone.now()
    fresh = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    workers = []
    listed = InferenceWorker.objects.exclude(state=WorkerState.STOPPED).select_related("current_job").order_by("pk")
    for index, w in enumerate(listed, start=1):
        alive = w.heartbeat_at >= fresh
        worker = {
            "name": w.name,
            "host": w.host,
            "pid": w.pid,
            "state": w.state if alive else "stale",
            "world_size": w.world_size,
            "topology": w.topology,
            "device": w.device,
            "model": w.model,
            "current_job": w.current_job.request_id if w.current_job_id else None,
            "jobs_done": w.jobs_done,
            "heartbeat_age_seconds": round((now - w.heartbeat_at).total_seconds(), 1),
            # What the weights run as, and the bytes each rank holds (and its last job's peak).
            "quantization": w.quantization,
            "memory": w.memory,
            "detail": w.detail,
        }
        if not private:
            worker = {"name": f"#{index}", **{k: v for k, v in worker.items() if k not in PRIVATE_WORKER_FIELDS}}
        workers.append(worker)
    return {"workers": workers, "ready": sum(1 for w in workers if w["state"] in ("idle", "busy"))}


TOPOLOGY_KEYS: tuple[str, ...] = (
    "world_size", "ulysses_size", "ring_size", "cfg_size", "dit_fsdp", "t5_fsdp", "t5_cpu", "vae_parallel",
)


def running_topology(*, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The topology that actually runs: the first ready worker's. Without one, the configured
    switches, marked as such (this process's settings, not a running daemon)."""
    for worker in workers:
        if worker["state"] in ("idle", "busy") and worker["topology"]:
            topology = {key: worker["topology"].get(key) for key in TOPOLOGY_KEYS}
            return {**topology, "source": f"worker {worker['name']}"}
    return {
        "world_size": None,
        "ulysses_size": settings.ULYSSES_SIZE,
        "ring_size": settings.RING_SIZE,
        "cfg_size": settings.CFG_SIZE,
        "dit_fsdp": settings.DIT_FSDP,
        "t5_fsdp": settings.T5_FSDP,
        "t5_cpu": settings.T5_CPU,
        "vae_parallel": settings.VAE_PARALLEL,
        "source": "settings (no inference worker is ready)",
    }


def _shown_worker_state(now) -> Case:
    """A worker's state, "stale" for a live one whose heartbeat is older than WORKER_STALE_SECONDS."""
    fresh = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    live = [WorkerState.LOADING, WorkerState.IDLE, WorkerState.BUSY]
    return Case(When(state__in=live, heartbeat_at__lt=fresh, then=Value("stale")), default=F("state"),
                output_field=CharField())


def worker_state_counts(*, now=None) -> dict[str, int]:
    counts = {state: 0 for state in (*WorkerState.values, "stale")}
    shown = InferenceWorker.objects.annotate(shown=_shown_worker_state(now or timezone.now()))
    for row in shown.values("shown").annotate(n=Count("id")).order_by():
        counts[row["shown"]] = row["n"]
    return counts


def worker_metric_rows(*, now=None, private: bool) -> list[dict[str, Any]]:
    """Every worker but the stopped ones. Anonymous callers get "#1", "#2", … for names, numbered
    as in worker_summary (a default name is host:pid)."""
    now = now or timezone.now()
    rows = (
        InferenceWorker.objects.exclude(state=WorkerState.STOPPED)
        .annotate(shown=_shown_worker_state(now))
        .order_by("pk")
        .values("name", "device", "world_size", "shown", "jobs_done", "heartbeat_at")
    )
    return [
        {
            "name": row["name"] if private else f"#{index}",
            "device": row["device"],
            "world_size": row["world_size"],
            "state": row["shown"],
            "jobs_done": row["jobs_done"],
            "heartbeat_age_seconds": round((now - row["heartbeat_at"]).total_seconds(), 1),
        }
        for index, row in enumerate(rows, start=1)
    ]
