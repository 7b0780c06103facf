"""The persistent job queue: one row per video job, one row per inference daemon.

Rows change state only through ``videojobs.services``; the models carry no behaviour.
"""
from __future__ import annotations

import uuid

from django.contrib.postgres.functions import RandomUUID
from django.db import models


def new_request_id() -> str:
    return uuid.uuid4().hex


class JobStatus(models.TextChoices):
    # The public status words of the original API contract, exactly.
    IN_QUEUE = "InQueue", "InQueue"
    IN_PROGRESS = "InProgress", "InProgress"
    SUCCEED = "Succeed", "Succeed"
    FAILED = "Failed", "Failed"
    CANCELLED = "Cancelled", "Cancelled"


UNFINISHED_STATUSES = (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS)
FINISHED_STATUSES = (JobStatus.SUCCEED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobPhase(models.TextChoices):
    PREPARING = "preparing", "preparing input"
    WAITING = "waiting", "waiting for a worker"
    ENCODING = "encoding", "encoding"
    DENOISING = "denoising", "denoising"
    DECODING = "decoding", "decoding"
    SAVING = "saving", "saving"
    DONE = "done", "done"


class VideoJob(models.Model):
    request_id = models.CharField(max_length=32, unique=True, default=new_request_id, editable=False)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.IN_QUEUE)
    phase = models.CharField(max_length=16, choices=JobPhase.choices, default=JobPhase.PREPARING)

    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True, default="")
    # Where the input came from: a URL fetched by prepare_input, or "" for an uploaded file.
    image_url = models.URLField(max_length=2048, blank=True, default="")
    # The validated generation parameters (image_size, num_frames, guidance_scale, ...),
    # as the submit serializer produced them, defaults filled in.
    params = models.JSONField(default=dict)

    input_image = models.CharField(max_length=255, blank=True, default="", help_text="path under MEDIA_ROOT")
    input_sha256 = models.CharField(max_length=64, blank=True, default="")
    input_ready_at = models.DateTimeField(null=True, blank=True)

    owner = models.CharField(max_length=64, blank=True, default="")
    # Where the job's events are POSTed (design: webhooks), and which: "started", "progress",
    # "completed" (any ending).
    webhook_url = models.URLField(max_length=2048, blank=True, default="")
    webhook_events = models.JSONField(default=list, blank=True)
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)
    # sha256 of the submitted request: a retry under the same idempotency key must match it.
    request_hash = models.CharField(max_length=64, blank=True, default="")

    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    lease_until = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=128, blank=True, default="")

    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # DELETE /v1/videos/{id}: the job is cancelled, its files removed and every read answers 404;
    # the row stays for the metrics and the admin.
    deleted_at = models.DateTimeField(null=True, blank=True)
    # POST /v1/videos/{id}/remix: the request_id of the job this one remixes.
    remixed_from = models.CharField(max_length=32, blank=True, default="")

    timings = models.JSONField(default=dict, blank=True, help_text="seconds per phase")
    result = models.JSONField(default=dict, blank=True)
    error_code = models.CharField(max_length=64, blank=True, default="")
    reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="videojob_unique_idempotency_key",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in JobStatus]),
                name="videojob_status_valid",
            ),
        ]
        indexes = [
            # The claim query: ready jobs in FIFO order.
            models.Index(
                fields=["created_at", "id"],
                condition=models.Q(status="InQueue", input_ready_at__isnull=False),
                name="videojob_claimable",
            ),
            models.Index(fields=["status", "lease_until"], name="videojob_status_lease"),
            models.Index(fields=["status", "created_at"], name="videojob_status_created"),
            # The per-owner gates of every submit: its submits in the last minute, its unfinished jobs.
            models.Index(fields=["owner", "created_at"], name="videojob_owner_created"),
            models.Index(fields=["owner"], condition=models.Q(status__in=UNFINISHED_STATUSES),
                         name="videojob_owner_unfinished"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.status})"


class WorkerState(models.TextChoices):
    LOADING = "loading", "loading"
    IDLE = "idle", "idle"
    BUSY = "busy", "busy"
    STOPPED = "stopped", "stopped"
    LOST = "lost", "lost"  # died without saying so: found dead by its successor or by the sweep


class InferenceWorker(models.Model):
    """One inference daemon group (all its ranks), as rank 0 reports it."""

    name = models.CharField(max_length=128, unique=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    world_size = models.PositiveIntegerField(default=1)
    topology = models.JSONField(default=dict, blank=True)
    device = models.CharField(max_length=64)
    model = models.CharField(max_length=512)
    state = models.CharField(max_length=16, choices=WorkerState.choices, default=WorkerState.LOADING)
    current_job = models.ForeignKey(VideoJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    jobs_done = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()
    detail = models.TextField(blank=True, default="")
    # The LoRA adapters this daemon holds: [{"name", "format", "rank", "bytes", "sha256"}].
    loras = models.JSONField(default=list, blank=True)
    # Bytes of weights per component on each rank, and the accelerator's peak of the last job.
    memory = models.JSONField(default=dict, blank=True)
    # What the weights and attention run as: {"dit": "none|fp8|int8", "t5": ..., "attention": ...}.
    quantization = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class JobEventKind(models.TextChoices):
    SUBMITTED = "submitted", "submitted"
    INPUT_READY = "input_ready", "input ready"
    STARTED = "started", "started"
    REQUEUED = "requeued", "requeued"
    CANCEL_REQUESTED = "cancel_requested", "cancel requested"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


class JobEvent(models.Model):
    """A job's history: one row per transition, written by the service that made it."""

    job = models.ForeignKey(VideoJob, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=24, choices=JobEventKind.choices)
    status = models.CharField(max_length=16, choices=JobStatus.choices)
    attempt = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=128, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    detail = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["job", "created_at"], name="jobevent_job_created")]

    def __str__(self) -> str:
        return f"{self.kind} ({self.status})"


class WebhookEvent(models.TextChoices):
    STARTED = "started", "started"
    PROGRESS = "progress", "progress"
    COMPLETED = "completed", "completed"


class DeliveryState(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "failed"  # gave up after WEBHOOK_MAX_ATTEMPTS


class WebhookDelivery(models.Model):
    """One webhook event for one job, and every attempt to deliver it."""

    job = models.ForeignKey(VideoJob, on_delete=models.CASCADE, related_name="webhook_deliveries")
    # The delivery's id for receivers (X-Webhook-Id): opaque, unlike the row's sequential pk, which
    # would tell them how many deliveries the service made. The database default gave the rows
    # that existed before it their own (migration 0007).
    public_id = models.UUIDField(default=uuid.uuid4, db_default=RandomUUID(), unique=True, editable=False)
    event = models.CharField(max_length=16, choices=WebhookEvent.choices)
    url = models.URLField(max_length=2048)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Every attempt: [{"at": iso, "status_code": int | None, "error": str, "seconds": float}].
    log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=models.Q(state="pending"), name="webhook_due"),
            models.Index(fields=["job", "created_at"], name="webhook_job_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event} -> {self.url} ({self.state})"


class MetricTotal(models.Model):
    """A /metrics histogram or counter series' share of the jobs the history sweep deleted: the
    live numbers come from the kept jobs, and adding these keeps them from ever going down."""

    name = models.CharField(max_length=96)
    labels = models.JSONField(default=list)  # label values, in the metric's label order
    key = models.CharField(max_length=512)  # the labels joined, for the unique constraint
    cumulative = models.JSONField(default=list)  # a histogram's per-bound counts; [] for a counter
    count = models.BigIntegerField(default=0)
    sum = models.FloatField(default=0.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "key"], name="metrictotal_unique_series")]

    def __str__(self) -> str:
        return f"{self.name}{self.labels}"
