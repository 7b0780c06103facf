"""The inference daemons in the admin: topology, device, model, state, current job, heartbeat,
jobs done and mean seconds per job, live while one is busy or loading."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from videojobs import selectors
from videojobs.admin.live import (
    CheckedChangeList,
    ReadOnlyAdmin,
    age_text,
    refresh_context,
    take_pause_flag,
    topology_text,
)
from videojobs.models import (
    InferenceWorker,
    WorkerState,
)


class WorkerChangeList(CheckedChangeList):
    """The workers page: each row also gets its mean seconds per job, from one query per page."""

    def get_results(self, request):
        super().get_results(request)
        means = selectors.worker_mean_seconds()
        self.result_list = list(self.result_list)
        for worker in self.result_list:
            worker.mean_seconds = means.get(worker.name)


@admin.register(InferenceWorker)
class InferenceWorkerAdmin(ReadOnlyAdmin):
    list_display = ("name", "topology_display", "device", "model_display", "state_display", "current_job_link",
                    "heartbeat_age", "jobs_done", "mean_seconds_display", "weights_display")
    list_filter = ("state", "host")
    list_select_related = ("current_job",)
    readonly_fields = [f.name for f in InferenceWorker._meta.fields] + ["mean_seconds_display", "weights_display"]

    def get_changelist(self, request, **kwargs):
        return WorkerChangeList

    def changelist_view(self, request, extra_context=None):
        paused = take_pause_flag(request)
        live = selectors.unfinished_count() > 0 or selectors.worker_state_counts()[WorkerState.LOADING] > 0
        refresh = refresh_context(request, live=live, paused=paused,
                                   reason="jobs are unfinished or a worker is loading")
        return super().changelist_view(request, {**(extra_context or {}), "refresh": refresh})

    @admin.display(description="topology")
    def topology_display(self, worker: InferenceWorker) -> str:
        return topology_text(worker.topology)

    @admin.display(description="model", ordering="model")
    def model_display(self, worker: InferenceWorker) -> str:
        return format_html('<span title="{}">{}</span>', worker.model, Path(worker.model).name or worker.model)

    @admin.display(description="state", ordering="state")
    def state_display(self, worker: InferenceWorker) -> str:
        live = worker.state in (WorkerState.LOADING, WorkerState.IDLE, WorkerState.BUSY)
        stale = (timezone.now() - worker.heartbeat_at).total_seconds() > settings.WORKER_STALE_SECONDS
        return f"{worker.state} (stale)" if live and stale else worker.state

    @admin.display(description="current job")
    def current_job_link(self, worker: InferenceWorker) -> str:
        if worker.current_job is None:
            return "-"
        url = reverse("admin:videojobs_videojob_change", args=[worker.current_job_id])
        return format_html('<a href="{}">{}</a>', url, worker.current_job.request_id)

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def heartbeat_age(self, worker: InferenceWorker) -> str:
        return age_text(worker.heartbeat_at)

    @admin.display(description="mean seconds per job")
    def mean_seconds_display(self, worker: InferenceWorker) -> str:
        if hasattr(worker, "mean_seconds"):
            mean = worker.mean_seconds
        else:  # the detail page: one worker
            mean = selectors.worker_mean_seconds().get(worker.name)
        return "-" if mean is None else f"{mean:.1f} s"

    @admin.display(description="weights per rank")
    def weights_display(self, worker: InferenceWorker) -> str:
        """E.g. "dit int8, t5 none; rank 0 7.9 GiB, rank 1 7.9 GiB; last job peak 21.3 GiB"."""
        return weights_text(worker.quantization, worker.memory)


def weights_text(quantization: dict, memory: dict) -> str:
    gib = 1024**3
    parts = []
    if quantization:
        parts.append(f"dit {quantization.get('dit', '?')}, t5 {quantization.get('t5', '?')}")
    ranks = (memory or {}).get("weights_bytes") or []
    if ranks:
        parts.append(", ".join(f"rank {i} {sum(held.values()) / gib:.2f} GiB" for i, held in enumerate(ranks)))
    peaks = [peak for peak in (memory or {}).get("last_job_peak_bytes") or [] if peak is not None]
    if peaks:
        parts.append(f"last job peak {max(peaks) / gib:.2f} GiB")
    return "; ".join(parts) or "-"
