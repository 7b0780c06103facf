"""The operators' view: every job, read-only, with cancel and requeue through the services."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib import admin, messages
from django.http import FileResponse, Http404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from videojobs import selectors, services
from videojobs.models import InferenceWorker, JobStatus, VideoJob


@admin.register(VideoJob)
class VideoJobAdmin(admin.ModelAdmin):
    list_display = ("request_id", "status", "phase", "progress_display", "prompt_excerpt", "created_at", "duration_display",
                    "attempt", "worker", "acceleration_display")
    list_filter = ("status", "phase", ("created_at", admin.DateFieldListFilter))
    search_fields = ("request_id", "prompt")
    date_hierarchy = "created_at"
    actions = ("cancel_jobs", "requeue_jobs")
    list_per_page = 50
    readonly_fields = (
        "request_id", "status", "phase", "progress_display", "prompt", "negative_prompt", "image_url", "input_preview",
        "input_sha256", "params", "attempt", "max_attempts", "worker", "lease_until", "created_at", "input_ready_at",
        "started_at", "finished_at", "cancel_requested_at", "duration_display", "timings", "result", "video_link",
        "error_code", "reason", "owner", "idempotency_key", "acceleration_display",
    )
    fieldsets = (
        (None, {"fields": ("request_id", "status", "phase", "progress_display", "error_code", "reason")}),
        ("Input", {"fields": ("prompt", "negative_prompt", "image_url", "input_preview", "input_sha256", "params")}),
        ("Execution", {"fields": ("attempt", "max_attempts", "worker", "lease_until", "cancel_requested_at")}),
        ("Timing", {"fields": ("created_at", "input_ready_at", "started_at", "finished_at", "duration_display", "timings")}),
        ("Result", {"fields": ("video_link", "acceleration_display", "result")}),
        ("Client", {"fields": ("owner", "idempotency_key")}),
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # Detail pages are read-only; state changes go through the actions.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    @admin.display(description="prompt")
    def prompt_excerpt(self, job: VideoJob) -> str:
        return job.prompt if len(job.prompt) <= 60 else job.prompt[:57] + "..."

    @admin.display(description="progress")
    def progress_display(self, job: VideoJob) -> str:
        if job.progress_total:
            return f"{job.progress_step}/{job.progress_total}"
        return "-"

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
        return format_html('<a href="{0}"><img src="{0}" style="max-width:480px;max-height:320px"></a>', url)

    @admin.display(description="acceleration")
    def acceleration_display(self, job: VideoJob) -> str:
        return selectors.acceleration_summary(result=job.result)

    @admin.display(description="video")
    def video_link(self, job: VideoJob) -> str:
        if job.status != JobStatus.SUCCEED:
            return "-"
        url = f"/videos/{job.request_id}.mp4"
        return format_html('<video src="{0}" controls style="max-width:480px"></video><br><a href="{0}">{0}</a>', url)

    def get_urls(self):
        extra = [
            path(
                "<int:job_id>/input.png",
                self.admin_site.admin_view(self.input_image_view),
                name="videojobs_videojob_input",
            )
        ]
        return extra + super().get_urls()

    def input_image_view(self, request, job_id: int):
        job = VideoJob.objects.filter(pk=job_id).only("input_image").first()
        if job is None or not job.input_image:
            raise Http404("no input image")
        file = Path(settings.MEDIA_ROOT) / job.input_image
        if not file.is_file():
            raise Http404("no input image")
        return FileResponse(file.open("rb"), content_type="image/png")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        done = skipped = 0
        for job in queryset:
            try:
                services.request_cancel(request_id=job.request_id)
                done += 1
            except services.JobAlreadyFinished:
                skipped += 1
        self.message_user(request, f"Cancel requested for {done} job(s); {skipped} had already finished.", messages.SUCCESS)

    @admin.action(description="Requeue selected failed/cancelled jobs")
    def requeue_jobs(self, request, queryset):
        done = sum(1 for job in queryset if services.requeue_job(job_id=job.pk))
        skipped = queryset.count() - done
        self.message_user(request, f"Requeued {done} job(s); {skipped} were not Failed or Cancelled.", messages.SUCCESS)


@admin.register(InferenceWorker)
class InferenceWorkerAdmin(admin.ModelAdmin):
    list_display = ("name", "state", "host", "pid", "world_size", "device", "current_job", "jobs_done", "heartbeat_at")
    list_filter = ("state", "host")
    readonly_fields = [f.name for f in InferenceWorker._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
