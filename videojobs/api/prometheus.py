"""/metrics in the Prometheus text format, rendered by prometheus_client.

A custom collector reads Postgres at scrape time (videojobs.selectors), so every gunicorn worker
answers with the same numbers and nothing lives in a process's memory. It is registered in a
registry of its own per scrape, not the global default one: that one would add this process's
own gc and process metrics, and the operator's and the anonymous view differ in worker names.

Histograms and ``_total`` counters count every finished job: the kept history (JOB_HISTORY_DAYS),
plus what the history sweep carried into MetricTotal before deleting older jobs, so they never
go down (Prometheus would read that as a reset).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from videojobs import selectors
from videojobs.models import JobStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST



def _gauge(name: str, documentation: str, values: dict, label: str | None = None) -> GaugeMetricFamily:
    if label is None:
        return GaugeMetricFamily(name, documentation, value=values)
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([selectors.metric_label(key)], value)
    return family


def _add_series(family: HistogramMetricFamily, labels: Sequence[object], bounds: Sequence[float],
                counts: selectors.BucketCounts) -> None:
    buckets = [(floatToGoString(bound), n) for bound, n in zip(bounds, counts.cumulative)]
    family.add_metric([selectors.metric_label(value) for value in labels], [*buckets, ("+Inf", counts.count)],
                      counts.sum)


class VideogenCollector(Collector):
    """Every videogen_* metric, from Postgres at the moment of the scrape."""

    def __init__(self, *, private: bool, started_at: float) -> None:
        self.private = private  # an operator's scrape: real worker names
        self.started_at = started_at

    def collect(self) -> Iterable[Metric]:
        yield from self._jobs()
        yield from self._workers()
        yield from self._acceleration()
        yield from self._job_histograms()
        yield _gauge("videogen_uptime_seconds", "Seconds since this web process started.", time.time() - self.started_at)

    def _jobs(self) -> Iterable[Metric]:
        counts = selectors.status_counts()
        unfinished = counts[JobStatus.IN_QUEUE] + counts[JobStatus.IN_PROGRESS]
        by_phase = selectors.queue_depth_by_phase()
        yield _gauge("videogen_jobs", "Jobs by status (finished ones while kept, JOB_HISTORY_DAYS).", counts, "status")
        yield _gauge("videogen_queue_depth", "Jobs in the queue (InQueue).", counts[JobStatus.IN_QUEUE])
        yield _gauge("videogen_queue_depth_by_phase",
                     "Queued jobs fetching their input (preparing) or ready for a worker (waiting).", by_phase, "phase")
        yield _gauge("videogen_queue_capacity", "MAX_CONCURRENT_TASKS: unfinished jobs admitted before 429.",
                     settings.MAX_CONCURRENT_TASKS)
        yield _gauge("videogen_queue_slots_available", "Submissions still admitted before 429.",
                     max(settings.MAX_CONCURRENT_TASKS - unfinished, 0))
        yield _gauge("videogen_webhook_deliveries_pending", "Webhook deliveries waiting for their first or next try.",
                     selectors.pending_webhook_deliveries(), "event")

    def _workers(self) -> Iterable[Metric]:
        states = selectors.worker_state_counts()
        rows = selectors.worker_metric_rows(private=self.private)
        yield _gauge("videogen_workers_ready", "Inference daemons idle or busy with a fresh heartbeat.",
                     states["idle"] + states["busy"])
        yield _gauge("videogen_workers", "Inference daemons by state (stale: silent for WORKER_STALE_SECONDS).",
                     states, "state")
        info = GaugeMetricFamily("videogen_worker_info", "One per inference daemon that is not stopped.",
                                 labels=["name", "device", "world_size", "state"])
        done = CounterMetricFamily("videogen_worker_jobs_done_total", "Jobs the daemon ended since it started.",
                                   labels=["name"])
        age = GaugeMetricFamily("videogen_worker_heartbeat_age_seconds", "Seconds since the daemon's last heartbeat.",
                                labels=["name"])
        for row in rows:
            info.add_metric([row["name"], selectors.metric_label(row["device"]), str(row["world_size"]), row["state"]],
                            1)
            done.add_metric([row["name"]], row["jobs_done"])
            age.add_metric([row["name"]], row["heartbeat_age_seconds"])
        yield from (info, done, age)

    def _acceleration(self) -> Iterable[Metric]:
        stats = selectors.acceleration_stats()
        yield _gauge("videogen_jobs_by_cache_method", "Succeeded jobs by the step cache they ran with.",
                     stats["jobs_by_cache_method"], "method")
        yield _gauge("videogen_jobs_by_lora", 'Kept jobs by the LoRA adapters they ran with ("none": without).',
                     selectors.jobs_by_lora(), "lora")
        yield _gauge("videogen_jobs_by_attention_backend", "Succeeded jobs by the DiT's attention backend.",
                     stats["jobs_by_attention_backend"], "backend")
        yield _gauge("videogen_attention_outputs_reused", "Block self-attention outputs the attention cache reused.",
                     stats["attention_outputs_reused"], "pass")
        yield _gauge("videogen_blocks_skipped", "Transformer block computations the adaptive cache skipped.",
                     stats["blocks_skipped"], "pass")
        yield _gauge("videogen_prompt_cache_hits", "Prompt embeddings served without the text encoder.",
                     stats["prompt_cache_hits"])
        yield _gauge("videogen_jobs_by_sample_solver", "Succeeded jobs by the sampler they ran with.",
                     stats["jobs_by_sample_solver"], "solver")
        yield _gauge("videogen_dit_forwards", "DiT forward passes the succeeded jobs ran (cache skips counted out).",
                     stats["dit_forwards"])

    def _job_histograms(self) -> Iterable[Metric]:
        # The kept jobs' series plus what the history sweep carried over from the deleted ones.
        series = selectors.add_series(selectors.history_series(), selectors.metric_totals())
        for name, (documentation, labels, bounds) in HISTORIES.items():
            if bounds is None:
                family = CounterMetricFamily(name, documentation, labels=list(labels))
                for values, counts in sorted(series.get(name, {}).items()):
                    family.add_metric(list(values), counts.count)
            else:
                family = HistogramMetricFamily(name, documentation, labels=list(labels))
                for values, counts in sorted(series.get(name, {}).items()):
                    _add_series(family, values, bounds, counts)
            yield family


# name -> (help, label names, bucket bounds or None for a counter), in exposition order.
HISTORIES: dict[str, tuple[str, tuple[str, ...], tuple[float, ...] | None]] = {
    "videogen_job_queue_wait_seconds": ("Finished jobs that ran: submit to last start.", ("resolution", "status"),
                                        selectors.SECONDS_BUCKETS),
    "videogen_job_duration_seconds": ("Finished jobs that ran: last start to end.", ("resolution", "status"),
                                      selectors.SECONDS_BUCKETS),
    "videogen_job_frames": ("Finished jobs: num_frames asked for.", ("resolution",), selectors.FRAME_BUCKETS),
    "videogen_job_infer_steps": ("Finished jobs: infer_steps asked for.", ("resolution",),
                                 selectors.INFER_STEP_BUCKETS),
    "videogen_denoising_step_seconds": ("Succeeded jobs: seconds per denoising step.", ("resolution",),
                                        selectors.STEP_SECONDS_BUCKETS),
    "videogen_job_phase_seconds": ("Finished jobs: seconds spent in each timed phase.", ("phase",),
                                   selectors.SECONDS_BUCKETS),
    "videogen_input_failures_total": ("Jobs failed because their input image could not be fetched or decoded.",
                                      ("code",), None),
    "videogen_webhook_deliveries_total": ("Webhook deliveries that ended, by event and state (failed: gave up).",
                                          ("event", "state"), None),
    "videogen_webhook_failed_attempts_total": ("Webhook delivery attempts that did not succeed.", (), None),
}


def render(*, private: bool, started_at: float) -> bytes:
    """The Prometheus text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VideogenCollector(private=private, started_at=started_at))
    return generate_latest(registry)
