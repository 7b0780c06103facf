"""The jobs in the admin: the live list, a job's whole story on its page (input, video, timings,
topology, cache reuse, attempts and errors, webhook deliveries), and the operator actions, each
through a service: cancel, requeue, retry as a new job, delete the output."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from videojobs import selectors, services
from videojobs.errors import JobRefused, refusal_sentence
from videojobs.admin.live import (
    ReadOnlyAdmin,
    compact,
    excerpt,
    refresh_context,
    seconds_text,
    take_pause_flag,
    topology_text,
)
from videojobs.models import (
    FINISHED_STATUSES,
    UNFINISHED_STATUSES,
    JobEvent,
    JobPhase,
    JobStatus,
    VideoJob,
    WebhookDelivery,
)

# --- operator actions on one job: a message, or _Refused saying why not ------------------


class _Refused(Exception):
    """The action does not apply to this job; the message says why."""


def _cancel(job: VideoJob) -> tuple[str, int]:
    try:
        job = services.request_cancel(request_id=job.request_id)
    except JobRefused as exc:
        raise _Refused(refusal_sentence(exc)) from None
    if job.status == JobStatus.CANCELLED:
        return f"{job.request_id} is cancelled", job.pk
    return f"cancel requested for {job.request_id}: its worker stops it at the next step", job.pk


def _requeue(job: VideoJob) -> tuple[str, int]:
    if not services.requeue_job(job_id=job.pk):
        raise _Refused(f"{job.request_id} is {job.status}; only Failed or Cancelled jobs are requeued")
    return f"{job.request_id} is back in the queue", job.pk


def _retry(job: VideoJob) -> tuple[str, int]:
    try:
        new = services.retry_as_new_job(job_id=job.pk)
    except JobRefused as exc:  # not finished, input gone, or what any submit may meet
        raise _Refused(f"{job.request_id} was not retried: {refusal_sentence(exc)}") from None
    return f"{job.request_id} retried as new job {new.request_id}", new.pk


def _delete_output(job: VideoJob) -> tuple[str, int]:
    try:
        deleted = services.delete_job_output(job_id=job.pk)
    except JobRefused as exc:
        raise _Refused(refusal_sentence(exc)) from None
    if not deleted:
        raise _Refused(f"{job.request_id} has no video to delete")
    return f"the video of {job.request_id} is deleted", job.pk


# name in the URL -> (button label, operation, whether it applies to the job as it is now)
JOB_OPERATIONS: dict[str, tuple[str, Callable[[VideoJob], tuple[str, int]], Callable[[VideoJob], bool]]] = {
    "cancel": ("Cancel", _cancel, lambda job: job.status in UNFINISHED_STATUSES),
    "requeue": ("Requeue", _requeue, lambda job: job.status in (JobStatus.FAILED, JobStatus.CANCELLED)),
    "retry": ("Retry as a new job", _retry, lambda job: job.status in FINISHED_STATUSES),
    "delete-output": ("Delete output", _delete_output, lambda job: selectors.has_video(job=job)),
}


class _ColumnFilter(admin.SimpleListFilter):
    """Jobs by the distinct values of one text column; the empty value is listed as ``empty_label``."""

    column = ""
    empty_label = "(none)"
    _EMPTY = "__none__"

    def lookups(self, request, model_admin):
        values = VideoJob.objects.order_by(self.column).values_list(self.column, flat=True).distinct()
        return [(value or self._EMPTY, value or self.empty_label) for value in values]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(**{self.column: "" if value == self._EMPTY else value})


class WorkerFilter(_ColumnFilter):
    title = parameter_name = column = "worker"
    empty_label = "(no worker: never started, or requeued)"


class OwnerFilter(_ColumnFilter):
    title = parameter_name = column = "owner"
    empty_label = "(anonymous)"


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class JobEventInline(_ReadOnlyInline):
    model = JobEvent
    verbose_name_plural = "attempts and errors (every transition)"
    fields = readonly_fields = ("created_at", "kind", "status", "attempt", "worker", "error_code", "detail")
    ordering = ("created_at", "id")


class WebhookDeliveryInline(_ReadOnlyInline):
    model = WebhookDelivery
    verbose_name_plural = "webhook deliveries"
    fields = readonly_fields = ("event", "url", "state", "attempts", "last_status_code", "last_error",
                                "delivered_at", "next_attempt_at")
    ordering = ("created_at", "id")
    show_change_link = True


@admin.register(VideoJob)
class VideoJobAdmin(ReadOnlyAdmin):
    list_display = ("request_id", "status", "phase", "progress_bar", "prompt_excerpt", "owner", "created_at",
                    "duration_display", "attempt", "worker", "acceleration_display", "loras_display")
    list_filter = ("status", "phase", WorkerFilter, OwnerFilter, ("created_at", admin.DateFieldListFilter),
                   ("deleted_at", admin.EmptyFieldListFilter))
    search_fields = ("request_id", "prompt")
    date_hierarchy = "created_at"
    actions = ("cancel_jobs", "requeue_jobs", "retry_jobs", "delete_outputs")
    list_per_page = 50
    inlines = (JobEventInline, WebhookDeliveryInline)
    readonly_fields = (
        "request_id", "status", "phase", "progress_bar", "prompt", "negative_prompt", "image_url", "input_preview",
        "input_sha256", "params", "loras_display", "attempt", "max_attempts", "worker", "lease_until", "created_at", "input_ready_at",
        "started_at", "finished_at", "cancel_requested_at", "duration_display", "timings_table", "result",
        "video_link", "topology_display", "cache_display", "error_code", "reason", "owner", "idempotency_key",
        "webhook_url", "webhook_events", "deleted_at", "remixed_from",
    )
    fieldsets = (
        (None, {"fields": ("request_id", "status", "phase", "progress_bar", "error_code", "reason")}),
        ("Input", {"fields": ("prompt", "negative_prompt", "image_url", "input_preview", "input_sha256", "params",
                              "loras_display")}),
        ("Execution", {"fields": ("attempt", "max_attempts", "worker", "lease_until", "cancel_requested_at")}),
        ("Timing", {"fields": ("created_at", "input_ready_at", "started_at", "finished_at", "duration_display",
                               "timings_table")}),
        ("Result", {"fields": ("video_link", "topology_display", "cache_display", "result")}),
        ("Client", {"fields": ("owner", "idempotency_key", "webhook_url", "webhook_events", "deleted_at",
                               "remixed_from")}),
    )

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    # --- the live pages ---

    def changelist_view(self, request, extra_context=None):
        paused = take_pause_flag(request)
        refresh = refresh_context(request, live=selectors.unfinished_count() > 0, paused=paused,
                                   reason="jobs are unfinished")
        return super().changelist_view(request, {**(extra_context or {}), "refresh": refresh})

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The job the change view already loaded: its page refreshes while it runs.
        paused = take_pause_flag(request)
        if obj is not None:
            context["refresh"] = refresh_context(request, live=obj.status in UNFINISHED_STATUSES, paused=paused,
                                                  reason="the job is unfinished")
            context["job_actions"] = [
                {"label": label, "url": reverse(f"admin:videojobs_videojob_{name}", args=[obj.pk]), "name": name}
                for name, (label, _, applies) in JOB_OPERATIONS.items() if applies(obj)
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- columns and fields ---

    @admin.display(description="prompt")
    def prompt_excerpt(self, job: VideoJob) -> str:
        return excerpt(job.prompt, 60)

    @admin.display(description="progress")
    def progress_bar(self, job: VideoJob) -> str:
        percent = round(selectors.job_progress(job=job) * 100)
        steps = f" (step {job.progress_step}/{job.progress_total})" if job.progress_total else ""
        return format_html('<progress class="job-progress" value="{0}" max="100"></progress> {0}%{1}', percent, steps)

    @admin.display(description="duration")
    def duration_display(self, job: VideoJob) -> str:
        if not job.started_at:
            return "-"
        end = job.finished_at or timezone.now()
        return f"{(end - job.started_at).total_seconds():.1f} s"

    @admin.display(description="input image")
    def input_preview(self, job: VideoJob) -> str:
        if not job.input_image:
            return "-"
        url = reverse("admin:videojobs_videojob_input", args=[job.pk])
        return format_html('<a href="{0}"><img class="job-input" src="{0}"></a>', url)

    @admin.display(description="acceleration")
    def acceleration_display(self, job: VideoJob) -> str:
        return selectors.acceleration_summary(result=job.result)

    @admin.display(description="LoRAs")
    def loras_display(self, job: VideoJob) -> str:
        loras = job.params.get("loras") or []
        return ", ".join(f"{item['name']} x{item['scale']:g}" for item in loras) or "-"

    @admin.display(description="video")
    def video_link(self, job: VideoJob) -> str:
        if job.status != JobStatus.SUCCEED:
            return "-"
        result = job.result or {}
        if result.get("expired"):
            return f"deleted: {result.get('expired_reason', '')}"
        # The admin serves it itself: the public URL answers only the job's owner.
        src = reverse("admin:videojobs_videojob_video", args=[job.pk])
        return format_html('<video src="{}" controls preload="metadata" class="job-video"></video><br>'
                           "the client downloads it at <code>{}</code>", src,
                           selectors.video_url_for(request_id=job.request_id))

    @admin.display(description="seconds per phase")
    def timings_table(self, job: VideoJob) -> str:
        timings = job.timings or {}
        if not timings:
            return "-"
        phases = [p for p in selectors.TIMED_PHASES if p in timings] + sorted(set(timings) - set(selectors.TIMED_PHASES))
        # A stopped job timed only the steps it ran.
        steps = job.progress_step or job.params.get("infer_steps") or 0
        rows = [
            (phase, seconds_text(timings[phase]),
             seconds_text(timings[phase] / steps) if phase == JobPhase.DENOISING and steps and
             isinstance(timings[phase], (int, float)) else "")
            for phase in phases
        ]
        total = sum(value for value in timings.values() if isinstance(value, (int, float)))
        return format_html(
            '<table class="timings"><thead><tr><th>phase</th><th>seconds</th><th>seconds per step</th></tr></thead>'
            "<tbody>{}<tr><th>total</th><th>{}</th><td></td></tr></tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows), seconds_text(total),
        )

    @admin.display(description="topology")
    def topology_display(self, job: VideoJob) -> str:
        topology = (job.result or {}).get("topology")
        if not topology:
            return "-"
        extra = [f"{label} {topology[key]}" for key, label in (("device", "device"), ("attention_backend", "attention"))
                 if topology.get(key)]
        warnings = (job.result or {}).get("warnings") or []
        return format_html("{}{}{}", topology_text(topology), f" ({', '.join(extra)})" if extra else "",
                           format_html_join("", "<br>warning: {}", ((w,) for w in warnings)))

    @admin.display(description="cache reuse")
    def cache_display(self, job: VideoJob) -> str:
        acceleration = (job.result or {}).get("acceleration")
        if not acceleration:
            return "-"
        cache = acceleration.get("cache") or {}
        rows = [(key, compact(value)) for key, value in sorted(cache.items()) if key != "method"]
        rows.append(("prompt_cache_hits", compact(acceleration.get("prompt_cache_hits", 0))))
        return format_html('{}<table class="cache">{}</table>', selectors.acceleration_summary(result=job.result),
                           format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))

    # --- files and the detail page's buttons ---

    def get_urls(self):
        def staff(view, route: str, name: str, cacheable: bool = False):
            return path(f"<int:job_id>/{route}", self.admin_site.admin_view(view, cacheable=cacheable),
                        name=f"videojobs_videojob_{name}")

        # The input image never changes: a live job page reloading every few seconds reuses it.
        extra = [staff(self.input_image_view, "input.png", "input", cacheable=True),
                 staff(self.video_view, "video.mp4", "video")]
        extra += [staff(self._operation_view(name), f"{name}/", name) for name in JOB_OPERATIONS]
        return extra + super().get_urls()

    def input_image_view(self, request, job_id: int):
        job = VideoJob.objects.filter(pk=job_id).only("input_image").first()
        if job is None or not job.input_image:
            raise Http404("no input image")
        response = self._file(Path(settings.MEDIA_ROOT) / job.input_image, "image/png")
        response["Cache-Control"] = "private, max-age=86400"
        return response

    def video_view(self, request, job_id: int):
        job = VideoJob.objects.filter(pk=job_id).only("request_id", "status", "result").first()
        if job is None or not selectors.has_video(job=job):
            raise Http404("no video")
        return self._file(selectors.video_path(job=job), "video/mp4")

    @staticmethod
    def _file(file: Path, content_type: str) -> FileResponse:
        if not file.is_file():
            raise Http404("the file is gone")
        return FileResponse(file.open("rb"), content_type=content_type)

    def _operation_view(self, name: str):
        _, operation, _ = JOB_OPERATIONS[name]

        @require_POST
        def view(request, job_id: int):
            job = get_object_or_404(VideoJob, pk=job_id)
            if not self.has_view_permission(request, job):
                raise PermissionDenied
            try:
                message, shown = operation(job)
            except _Refused as exc:
                self.message_user(request, str(exc), messages.ERROR)
                shown = job.pk
            else:
                self.message_user(request, message, messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:videojobs_videojob_change", args=[shown]))

        return view

    # --- the list's actions ---

    def _apply(self, request, queryset, name: str) -> None:
        label, operation, _ = JOB_OPERATIONS[name]
        done, refused = [], []
        for job in queryset:
            try:
                done.append(operation(job)[0])
            except _Refused as exc:
                refused.append(str(exc))
        if done:
            self.message_user(request, f"{label}: {len(done)} job(s): " + "; ".join(done), messages.SUCCESS)
        if refused:
            self.message_user(request, f"{label}: {len(refused)} job(s) skipped: " + "; ".join(refused),
                              messages.WARNING)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        self._apply(request, queryset, "cancel")

    @admin.action(description="Requeue selected failed/cancelled jobs")
    def requeue_jobs(self, request, queryset):
        self._apply(request, queryset, "requeue")

    @admin.action(description="Retry selected finished jobs as new jobs")
    def retry_jobs(self, request, queryset):
        self._apply(request, queryset, "retry")

    @admin.action(description="Delete the videos of selected jobs")
    def delete_outputs(self, request, queryset):
        self._apply(request, queryset, "delete-output")
