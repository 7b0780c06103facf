"""The aggregates /metrics and the admin's history read: job counts by status and queue phase,
acceleration totals, the finished jobs' histograms and counters (kept history plus what the
history sweep carried into MetricTotal), webhook deliveries, each worker's mean job time.

Postgres computes every number at scrape time, so each gunicorn worker reports the same ones."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Avg, Case, Count, F, FloatField, Func, IntegerField, QuerySet, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Greatest, NullIf
from django.db.models.lookups import LessThanOrEqual

from videojobs.models import DeliveryState, JobPhase, JobStatus, MetricTotal, VideoJob, WebhookDelivery


def status_counts() -> dict[str, int]:
    counts = {s.value: 0 for s in JobStatus}
    for row in VideoJob.objects.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def queue_depth_by_phase() -> dict[str, int]:
    """Queued jobs still fetching their input (preparing) or ready for a worker (waiting)."""
    depth = {JobPhase.PREPARING.value: 0, JobPhase.WAITING.value: 0}
    for row in VideoJob.objects.filter(status=JobStatus.IN_QUEUE).values("phase").annotate(n=Count("id")).order_by():
        depth[row["phase"]] = row["n"]
    return depth


def pending_webhook_deliveries() -> dict[str, int]:
    """Deliveries not yet delivered nor given up, by event."""
    rows = WebhookDelivery.objects.filter(state=DeliveryState.PENDING).values("event").annotate(n=Count("id"))
    return {row["event"]: row["n"] for row in rows.order_by()}


def acceleration_stats() -> dict[str, Any]:
    """Finished jobs by cache method, attention backend and sampler, what they reused, and the DiT
    forward passes they ran (result.dit_forwards), for /metrics."""
    succeeded = VideoJob.objects.filter(status=JobStatus.SUCCEED, result__has_key="acceleration")
    by_method = {
        row["method"]: row["n"]
        for row in succeeded.values(method=KT("result__acceleration__cache__method")).annotate(n=Count("id"))
    }
    by_backend = {
        row["backend"]: row["n"]
        for row in succeeded.values(backend=KT("result__acceleration__attention_backend")).annotate(n=Count("id"))
    }
    # The sampler that ran (the job's parameters say it: the serializer always fills sample_solver).
    by_solver = {
        row["solver"]: row["n"]
        for row in succeeded.values(solver=KT("params__sample_solver")).annotate(n=Count("id")).order_by()
    }

    # Every total in one aggregate query.
    paths = {
        **{f"reused_{p}": f"result__acceleration__cache__reused__{p}" for p in ("cond", "uncond")},
        **{f"skipped_{p}": f"result__acceleration__cache__skipped_blocks__{p}" for p in ("cond", "uncond")},
        "prompt_cache_hits": "result__acceleration__prompt_cache_hits",
        "dit_forwards": "result__dit_forwards",
    }
    totals = succeeded.aggregate(**{name: Coalesce(Sum(Cast(KT(path), IntegerField())), 0)
                                    for name, path in paths.items()})
    return {
        "jobs_by_cache_method": by_method,
        "jobs_by_attention_backend": by_backend,
        "attention_outputs_reused": {p: int(totals[f"reused_{p}"]) for p in ("cond", "uncond")},
        "blocks_skipped": {p: int(totals[f"skipped_{p}"]) for p in ("cond", "uncond")},
        "prompt_cache_hits": int(totals["prompt_cache_hits"]),
        "jobs_by_sample_solver": by_solver,
        "dit_forwards": int(totals["dit_forwards"]),
    }


# --- Histograms and counters of finished jobs (videojobs.metrics) --------------------------
# The kept history plus what the history sweep carried into MetricTotal before it deleted older jobs.


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


def metric_totals() -> Series:
    """What the history sweep carried over from the jobs it deleted (MetricTotal)."""
    series: Series = {}
    for row in MetricTotal.objects.all():
        series.setdefault(row.name, {})[tuple(row.labels)] = BucketCounts(
            cumulative=tuple(row.cumulative), count=row.count, sum=row.sum)
    return series


def input_failure_counts(*, jobs: QuerySet | None = None) -> dict[str, int]:
    """Jobs whose input image could not be fetched or decoded, by error code: services.fail_input
    fails them while they are still preparing, and no other failure happens in that phase."""
    failed = (VideoJob.objects.all() if jobs is None else jobs).filter(status=JobStatus.FAILED,
                                                                      phase=JobPhase.PREPARING)
    return {row["error_code"]: row["n"] for row in failed.values("error_code").annotate(n=Count("id")).order_by()}


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
