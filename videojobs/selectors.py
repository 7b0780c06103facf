"""Every read the API, the admin and the sweeps make of jobs and workers."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Avg, Case, CharField, Count, F, FloatField, Func, IntegerField, QuerySet, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Greatest, NullIf
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

from videojobs.models import (
    UNFINISHED_STATUSES,
    DeliveryState,
    InferenceWorker,
    JobPhase,
    JobStatus,
    MetricTotal,
    VideoJob,
    WebhookDelivery,
    WorkerState,
)

REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")

# How much of the progress bar each phase covers: the denoising steps dominate the time.
_PHASE_SPAN = {
    JobPhase.ENCODING: (0.0, 0.05),
    JobPhase.DENOISING: (0.05, 0.90),
    JobPhase.DECODING: (0.90, 0.97),
    JobPhase.SAVING: (0.97, 1.0),
}


def get_job(*, request_id: str, owner: str | None = None) -> VideoJob:
    """The job, if ``owner`` (None: anyone, for the admin) owns it. Raises VideoJob.DoesNotExist
    for an unknown or malformed id, and for another owner's job (it must look unknown to them)."""
    if not isinstance(request_id, str) or not REQUEST_ID_RE.match(request_id):
        raise VideoJob.DoesNotExist(request_id)
    jobs = VideoJob.objects.all() if owner is None else VideoJob.objects.filter(owner=owner)
    return jobs.get(request_id=request_id)


def get_job_for_status(*, request_id: str, owner: str | None = None) -> VideoJob:
    """get_job for the status poll, the API's most frequent request: the job and its place in
    the queue in one round trip (``job.queue_ahead``), as raw SQL because the ORM's compilation
    of the two queries cost more than Postgres answering them (bench/api_load.py)."""
    if not isinstance(request_id, str) or not REQUEST_ID_RE.match(request_id):
        raise VideoJob.DoesNotExist(request_id)
    table, fields = VideoJob._meta.db_table, VideoJob._meta.concrete_fields
    columns = ", ".join(f'job."{field.column}"' for field in fields)
    sql = (
        f"SELECT {columns}, CASE WHEN job.status = %s THEN (SELECT count(*) FROM {table} ahead"
        f" WHERE ahead.status = %s AND ahead.created_at < job.created_at) END AS queue_ahead"
        f" FROM {table} job WHERE job.request_id = %s"
    )
    params: list[Any] = [JobStatus.IN_QUEUE, JobStatus.IN_QUEUE, request_id]
    if owner is not None:
        sql += " AND job.owner = %s"
        params.append(owner)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise VideoJob.DoesNotExist(request_id)
    # from_db applies no converters: decode the JSON columns as the ORM would.
    values = [field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
              for field, value in zip(fields, row)]
    job = VideoJob.from_db(connection.alias, [field.attname for field in fields], values)
    job.queue_ahead = row[len(fields)]
    return job


def unfinished_count() -> int:
    return VideoJob.objects.filter(status__in=UNFINISHED_STATUSES).count()


def queue_position(*, job: VideoJob) -> int | None:
    """1 for the next job a worker will claim; None once the job left the queue."""
    if job.status != JobStatus.IN_QUEUE:
        return None
    ahead = getattr(job, "queue_ahead", None)  # read with the job by get_job_for_status
    if ahead is None:
        ahead = VideoJob.objects.filter(status=JobStatus.IN_QUEUE, created_at__lt=job.created_at).count()
    return ahead + 1


def job_progress(*, job: VideoJob) -> float:
    if job.status == JobStatus.SUCCEED:
        return 1.0
    if job.status != JobStatus.IN_PROGRESS and job.status != JobStatus.FAILED and job.status != JobStatus.CANCELLED:
        return 0.0
    span = _PHASE_SPAN.get(job.phase)
    if span is None:
        return 0.0
    low, high = span
    if job.phase == JobPhase.DENOISING and job.progress_total:
        return round(low + (high - low) * job.progress_step / job.progress_total, 4)
    return low


def eta_seconds(*, job: VideoJob) -> float | None:
    """Remaining time from the pace so far; None until a denoising step has finished."""
    if job.status != JobStatus.IN_PROGRESS or not job.started_at or not job.progress_step or not job.progress_total:
        return None
    elapsed = (timezone.now() - job.started_at).total_seconds()
    fraction = job_progress(job=job)
    if fraction <= 0:
        return None
    return round(max(elapsed / fraction - elapsed, 0.0), 1)


def ready_workers(*, now=None) -> list[InferenceWorker]:
    now = now or timezone.now()
    fresh = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return list(
        InferenceWorker.objects.filter(state__in=[WorkerState.IDLE, WorkerState.BUSY], heartbeat_at__gte=fresh)
    )


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


def acceleration_summary(*, result: dict[str, Any] | None) -> str:
    """One line for the admin: the cache that ran, what it reused, the attention backend."""
    acceleration = (result or {}).get("acceleration")
    if not acceleration:
        return "-"
    cache = acceleration.get("cache") or {}
    method = cache.get("method", "none")
    parts = [f"cache {method}"]
    if method == "attention":
        parts.append(f"{cache.get('reused_steps_per_pass', 0)} steps/pass reused "
                     f"({', '.join(f'{p} {n}' for p, n in sorted((cache.get('reused') or {}).items())) or 'none'} attention outputs)")
    elif method == "dbcache":
        reused = ", ".join(f"{p} {n}" for p, n in sorted((cache.get("cached_steps") or {}).items())) or "none"
        skipped = ", ".join(f"{p} {n}" for p, n in sorted((cache.get("skipped_blocks") or {}).items())) or "none"
        parts.append(f"steps reused per pass: {reused} (blocks skipped: {skipped})")
    parts.append(f"attention {acceleration.get('attention_backend', '?')}")
    parts.append(f"prompt cache hits {acceleration.get('prompt_cache_hits', 0)}")
    return "; ".join(parts)


def acceleration_stats() -> dict[str, Any]:
    """Finished jobs by cache method and attention backend, and what they reused, for /metrics."""
    succeeded = VideoJob.objects.filter(status=JobStatus.SUCCEED, result__has_key="acceleration")
    by_method = {
        row["method"]: row["n"]
        for row in succeeded.values(method=KT("result__acceleration__cache__method")).annotate(n=Count("id"))
    }
    by_backend = {
        row["backend"]: row["n"]
        for row in succeeded.values(backend=KT("result__acceleration__attention_backend")).annotate(n=Count("id"))
    }

    # Every total in one aggregate query.
    paths = {
        **{f"reused_{p}": f"result__acceleration__cache__reused__{p}" for p in ("cond", "uncond")},
        **{f"skipped_{p}": f"result__acceleration__cache__skipped_blocks__{p}" for p in ("cond", "uncond")},
        "prompt_cache_hits": "result__acceleration__prompt_cache_hits",
    }
    totals = succeeded.aggregate(**{name: Coalesce(Sum(Cast(KT(path), IntegerField())), 0)
                                    for name, path in paths.items()})
    return {
        "jobs_by_cache_method": by_method,
        "jobs_by_attention_backend": by_backend,
        "attention_outputs_reused": {p: int(totals[f"reused_{p}"]) for p in ("cond", "uncond")},
        "blocks_skipped": {p: int(totals[f"skipped_{p}"]) for p in ("cond", "uncond")},
        "prompt_cache_hits": int(totals["prompt_cache_hits"]),
    }


def status_counts() -> dict[str, int]:
    counts = {s.value: 0 for s in JobStatus}
    for row in VideoJob.objects.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


# --- /metrics in the Prometheus format (videojobs.metrics) ---------------------------------
# Postgres computes every number at scrape time, so each gunicorn worker reports the same ones.
# Histograms and counters of finished jobs: the kept history plus what the history sweep
# carried into MetricTotal before it deleted older jobs.


@dataclass(frozen=True)
class BucketCounts:
    """One histogram series: how many values are <= each bound (cumulative), how many, their sum."""

    cumulative: tuple[int, ...]
    count: int
    sum: float


def _seconds_between(start: str, end: str) -> Func:
    return Func(F(end) - F(start), template="EXTRACT(EPOCH FROM %(expressions)s)::double precision",
                output_field=FloatField())


def _json_number(path: str) -> Cast:
    return Cast(KT(path), FloatField())


def bucket_counts(
    queryset: QuerySet, *, values: dict[str, tuple[Any, Sequence[float]]], group_by: Sequence[str] = ()
) -> list[tuple[dict[str, Any], dict[str, BucketCounts]]]:
    """Histograms of ``queryset`` in one aggregate query, no row loaded into Python: for each group
    of ``group_by`` and each named ``(expression, bounds)``, the rows whose value is <= each bound
    (COUNT ... FILTER), how many have a value at all (NULL is left out), and their sum."""
    aggregates: dict[str, Any] = {}
    for name, (expression, bounds) in values.items():
        for index, bound in enumerate(bounds):
            aggregates[f"{name}_le{index}"] = Count("pk", filter=LessThanOrEqual(expression, bound))
        aggregates[f"{name}_count"] = Count(expression)
        aggregates[f"{name}_sum"] = Sum(expression)
    if group_by:
        rows = list(queryset.values(*group_by).annotate(**aggregates).order_by(*group_by))
    else:
        rows = [queryset.aggregate(**aggregates)]
    return [
        (
            {key: row[key] for key in group_by},
            {
                name: BucketCounts(
                    cumulative=tuple(row[f"{name}_le{index}"] for index in range(len(bounds))),
                    count=row[f"{name}_count"],
                    sum=float(row[f"{name}_sum"] or 0.0),
                )
                for name, (_, bounds) in values.items()
            },
        )
        for row in rows
    ]


def _finished_jobs(jobs: QuerySet | None = None) -> QuerySet:
    """The finished jobs of ``jobs`` (default: every kept job), with their resolution."""
    base = VideoJob.objects.all() if jobs is None else jobs
    return base.filter(finished_at__isnull=False).annotate(resolution=KT("params__image_size"))


def job_time_histograms(*, bounds: Sequence[float], jobs: QuerySet | None = None
                        ) -> list[tuple[dict[str, Any], dict[str, BucketCounts]]]:
    """Finished jobs that ran, by resolution and status: ``queue_wait`` (submit to their last
    start) and ``duration`` (last start to end), in seconds."""
    return bucket_counts(
        _finished_jobs(jobs).filter(started_at__isnull=False),
        values={
            "queue_wait": (_seconds_between("created_at", "started_at"), bounds),
            "duration": (_seconds_between("started_at", "finished_at"), bounds),
        },
        group_by=("resolution", "status"),
    )


def job_size_histograms(
    *, frame_bounds: Sequence[float], step_bounds: Sequence[float], jobs: QuerySet | None = None
) -> list[tuple[dict[str, Any], dict[str, BucketCounts]]]:
    """Finished jobs by resolution: the ``frames`` and denoising ``steps`` they asked for."""
    return bucket_counts(
        _finished_jobs(jobs),
        values={
            "frames": (_json_number("params__num_frames"), frame_bounds),
            "steps": (_json_number("params__infer_steps"), step_bounds),
        },
        group_by=("resolution",),
    )


def step_seconds_histograms(*, bounds: Sequence[float], jobs: QuerySet | None = None
                            ) -> list[tuple[dict[str, Any], dict[str, BucketCounts]]]:
    """Succeeded jobs by resolution: seconds per denoising step (the daemon's timings["denoising"]
    over params["infer_steps"]; a stopped or failed job has no complete denoising time)."""
    per_step = _json_number("timings__denoising") / NullIf(_json_number("params__infer_steps"), Value(0.0))
    return bucket_counts(
        _finished_jobs(jobs).filter(status=JobStatus.SUCCEED, timings__has_key="denoising"),
        values={"step": (per_step, bounds)},
        group_by=("resolution",),
    )


# The phases the daemon times (inference.generate: encoding, denoising, decoding; daemon: saving).
TIMED_PHASES: tuple[str, ...] = (JobPhase.ENCODING, JobPhase.DENOISING, JobPhase.DECODING, JobPhase.SAVING)


def phase_histograms(*, bounds: Sequence[float], jobs: QuerySet | None = None) -> dict[str, BucketCounts]:
    """Finished jobs: seconds of each timed phase, from their ``timings``."""
    [(_, series)] = bucket_counts(
        _finished_jobs(jobs),
        values={phase: (_json_number(f"timings__{phase}"), bounds) for phase in TIMED_PHASES},
    )
    return series


SECONDS_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
STEP_SECONDS_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
# num_frames is 25..117 (4k+1), infer_steps 20..100: the low bounds serve smaller deployments.
FRAME_BUCKETS: tuple[float, ...] = (5, 17, 33, 49, 65, 81, 97, 117)
INFER_STEP_BUCKETS: tuple[float, ...] = (4, 10, 20, 30, 40, 50, 75, 100)
# A series: metric name -> label values -> counts (a counter's value is ``count``).
Series = dict[str, dict[tuple[str, ...], BucketCounts]]


def metric_label(value: object) -> str:
    """A Prometheus label value: "unknown" for a missing one."""
    return "unknown" if value is None or value == "" else str(value)


def history_series(*, jobs: QuerySet | None = None) -> Series:
    """Every histogram and counter /metrics computes from finished jobs, over ``jobs`` (default:
    the kept history). The history sweep adds the jobs it deletes to MetricTotal first
    (services.purge_finished_jobs), so these only ever grow, as Prometheus expects of them."""
    series: Series = {}

    def put(name: str, labels: tuple, counts: BucketCounts) -> None:
        series.setdefault(name, {})[tuple(metric_label(v) for v in labels)] = counts

    def counter(n: int) -> BucketCounts:
        return BucketCounts(cumulative=(), count=int(n), sum=0.0)

    for labels, row in job_time_histograms(bounds=SECONDS_BUCKETS, jobs=jobs):
        put("videogen_job_queue_wait_seconds", (labels["resolution"], labels["status"]), row["queue_wait"])
        put("videogen_job_duration_seconds", (labels["resolution"], labels["status"]), row["duration"])
    for labels, row in job_size_histograms(frame_bounds=FRAME_BUCKETS, step_bounds=INFER_STEP_BUCKETS, jobs=jobs):
        put("videogen_job_frames", (labels["resolution"],), row["frames"])
        put("videogen_job_infer_steps", (labels["resolution"],), row["steps"])
    for labels, row in step_seconds_histograms(bounds=STEP_SECONDS_BUCKETS, jobs=jobs):
        put("videogen_denoising_step_seconds", (labels["resolution"],), row["step"])
    for phase, counts in phase_histograms(bounds=SECONDS_BUCKETS, jobs=jobs).items():
        put("videogen_job_phase_seconds", (phase,), counts)
    for code, n in input_failure_counts(jobs=jobs).items():
        put("videogen_input_failures_total", (code,), counter(n))
    by_state, failed_attempts = webhook_delivery_stats(jobs=jobs)
    for (event, state), n in by_state.items():
        if state != "pending":  # a state deliveries leave: a gauge (pending_webhook_deliveries)
            put("videogen_webhook_deliveries_total", (event, state), counter(n))
    put("videogen_webhook_failed_attempts_total", (), counter(failed_attempts))
    return series


def add_series(a: Series, b: Series) -> Series:
    """a + b, series by series (a histogram's buckets, count and sum; a counter's count)."""
    total: Series = {name: dict(rows) for name, rows in a.items()}
    for name, rows in b.items():
        for labels, counts in rows.items():
            mine = total.setdefault(name, {}).get(labels)
            total[name][labels] = counts if mine is None else BucketCounts(
                cumulative=tuple(x + y for x, y in zip(mine.cumulative, counts.cumulative)) or mine.cumulative,
                count=mine.count + counts.count, sum=mine.sum + counts.sum)
    return total


def pending_webhook_deliveries() -> dict[str, int]:
    """Deliveries not yet delivered nor given up, by event."""
    rows = WebhookDelivery.objects.filter(state=DeliveryState.PENDING).values("event").annotate(n=Count("id"))
    return {row["event"]: row["n"] for row in rows.order_by()}


def metric_totals() -> Series:
    """What the history sweep carried over from the jobs it deleted (MetricTotal)."""
    series: Series = {}
    for row in MetricTotal.objects.all():
        series.setdefault(row.name, {})[tuple(row.labels)] = BucketCounts(
            cumulative=tuple(row.cumulative), count=row.count, sum=row.sum)
    return series


def queue_depth_by_phase() -> dict[str, int]:
    """Queued jobs still fetching their input (preparing) or ready for a worker (waiting)."""
    depth = {JobPhase.PREPARING.value: 0, JobPhase.WAITING.value: 0}
    for row in VideoJob.objects.filter(status=JobStatus.IN_QUEUE).values("phase").annotate(n=Count("id")).order_by():
        depth[row["phase"]] = row["n"]
    return depth


def input_failure_counts(*, jobs: QuerySet | None = None) -> dict[str, int]:
    """Jobs whose input image could not be fetched or decoded, by error code: services.fail_input
    fails them while they are still preparing, and no other failure happens in that phase."""
    failed = (VideoJob.objects.all() if jobs is None else jobs).filter(status=JobStatus.FAILED,
                                                                      phase=JobPhase.PREPARING)
    return {row["error_code"]: row["n"] for row in failed.values("error_code").annotate(n=Count("id")).order_by()}


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


def webhook_delivery_stats(*, jobs: QuerySet | None = None) -> tuple[dict[tuple[str, str], int], int]:
    """Webhook deliveries by (event, state), and the attempts that did not succeed: every attempt
    of a pending or failed (given up) delivery, all but the last of a delivered one."""
    unsuccessful = Case(
        When(state=DeliveryState.DELIVERED, then=Greatest(F("attempts") - Value(1), Value(0))),
        default=F("attempts"),
        output_field=IntegerField(),
    )
    deliveries = WebhookDelivery.objects.all() if jobs is None else WebhookDelivery.objects.filter(job__in=jobs)
    rows = deliveries.values("event", "state").annotate(n=Count("id"), failed=Sum(unsuccessful)).order_by()
    deliveries = {(row["event"], row["state"]): row["n"] for row in rows}
    return deliveries, sum(int(row["failed"] or 0) for row in rows)


def _epoch(value) -> float | None:
    return round(value.timestamp(), 3) if value else None


def expired_video_reason(*, request_id: str, owner: str) -> str | None:
    """Why a finished job's video is gone (the disk quota deleted it), or None."""
    result = VideoJob.objects.filter(request_id=request_id, owner=owner).values_list("result", flat=True).first() or {}
    return result.get("expired_reason") if result.get("expired") else None


def has_video(*, job: VideoJob) -> bool:
    """The job succeeded and its video was not deleted since (quota sweep, an operator)."""
    return job.status == JobStatus.SUCCEED and not (job.result or {}).get("expired")


def video_path(*, job: VideoJob) -> Path:
    """Where a succeeded job's video is (or was) stored."""
    return Path(settings.OUTPUT_DIR) / ((job.result or {}).get("video_file") or f"{job.request_id}.mp4")


def video_url_for(*, request_id: str) -> str:
    return f"/videos/{request_id}.mp4"


def status_document(*, job: VideoJob) -> dict[str, Any]:
    """The /video/status body: the original fields first, then our extra detail."""
    results = None
    if job.status == JobStatus.SUCCEED and job.result:
        results = {k: v for k, v in job.result.items() if k not in ("video_file",)}
        if job.result.get("expired"):
            # Nothing left to download: no URL or path that would only answer 410.
            results.pop("video_path", None)
        else:
            results["video_url"] = video_url_for(request_id=job.request_id)
    elif job.result:
        # A stopped or failed job still reports what actually ran (topology, warnings).
        results = {k: v for k, v in job.result.items() if k in ("topology", "warnings", "seed")} or None
    if results is not None and job.timings:
        results["timings"] = job.timings
    return {
        "requestId": job.request_id,
        "status": job.status,
        "reason": job.reason or None,
        "error_code": job.error_code or None,
        "results": results,
        "queue_position": queue_position(job=job),
        "progress": job_progress(job=job),
        "phase": job.phase,
        "step": job.progress_step,
        "total_steps": job.progress_total,
        "eta_seconds": eta_seconds(job=job),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested_at is not None,
        "parameters": job.params,
        "created_at": _epoch(job.created_at),
        "updated_at": _epoch(job.updated_at),
        "started_at": _epoch(job.started_at),
        "finished_at": _epoch(job.finished_at),
    }


def is_cancel_requested(*, job_id: int) -> bool:
    return VideoJob.objects.filter(pk=job_id, cancel_requested_at__isnull=False).exists()


def webhook_document(*, job: VideoJob) -> dict[str, Any]:
    """A webhook's body: the status document, its video_url absolute when PUBLIC_BASE_URL is set."""
    document = status_document(job=job)
    results = document.get("results") or {}
    if settings.PUBLIC_BASE_URL and results.get("video_url", "").startswith("/"):
        results["video_url"] = settings.PUBLIC_BASE_URL + results["video_url"]
    return document


def list_jobs(*, owner: str, status: str | None = None):
    """The caller's jobs, newest first (the API's /video/jobs, the job page's list)."""
    jobs = VideoJob.objects.filter(owner=owner)
    if status:
        jobs = jobs.filter(status=status)
    return jobs.order_by("-created_at", "-id")


def job_summary(*, job: VideoJob) -> dict[str, Any]:
    """One row of /video/jobs: enough to list and pick a job, without its queue place."""
    finished_video = has_video(job=job)
    return {
        "requestId": job.request_id,
        "status": job.status,
        "phase": job.phase,
        "progress": job_progress(job=job),
        "step": job.progress_step,
        "total_steps": job.progress_total,
        "prompt": job.prompt,
        "image_size": job.params.get("image_size"),
        "num_frames": job.params.get("num_frames"),
        "error_code": job.error_code or None,
        "reason": job.reason or None,
        "video_url": video_url_for(request_id=job.request_id) if finished_video else None,
        "created_at": _epoch(job.created_at),
        "finished_at": _epoch(job.finished_at),
    }


def worker_mean_seconds() -> dict[str, float]:
    """Each worker's mean seconds per succeeded job (its last start to its end), in one query."""
    rows = (
        VideoJob.objects.filter(status=JobStatus.SUCCEED, started_at__isnull=False, finished_at__isnull=False)
        .exclude(worker="")
        .values("worker")
        .annotate(mean=Avg(_seconds_between("started_at", "finished_at")))
        .order_by()
    )
    return {row["worker"]: float(row["mean"]) for row in rows}
