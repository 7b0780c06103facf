"""The daemon's side of a job: claim, heartbeat, progress, and its outcome (complete, fail,
stop on cancel, give back). Every write after the claim is fenced on (id, attempt, InProgress),
so a zombie whose lease was rescued cannot overwrite the attempt that replaced it."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from videojobs.models import JobEventKind, JobPhase, JobStatus, VideoJob, WebhookEvent
from videojobs.selectors.loras import held_lora_names
from videojobs.services import handoff
from videojobs.services.events import CANCELLED_REASON, back_in_queue, end_jobs, record_event
from videojobs.services.webhooks import queue_webhook


# No adapter of the job's params.loras is missing from the worker's list (%s, text[]).
_LORAS_HELD = (
    "NOT EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(videojobs_videojob.params -> 'loras') "
    "= 'array' THEN videojobs_videojob.params -> 'loras' ELSE '[]'::jsonb END) AS chosen "
    "WHERE NOT ((chosen ->> 'name') = ANY(%s::text[])))"
)


@transaction.atomic
def claim_next_job(*, worker: str, lease_seconds: int | None = None) -> VideoJob | None:
    """Claim the oldest ready job whose LoRA adapters this worker holds (its row's ``loras``):
    one transaction, FOR UPDATE SKIP LOCKED, attempt += 1."""
    lease = lease_seconds if lease_seconds is not None else settings.LEASE_SECONDS
    job = (
        VideoJob.objects.select_for_update(skip_locked=True)
        .filter(status=JobStatus.IN_QUEUE, input_ready_at__isnull=False, cancel_requested_at__isnull=True)
        # Only a job whose LoRA adapters this worker's row says it holds.
        .extra(where=[_LORAS_HELD], params=[held_lora_names(worker=worker)])
        .order_by("created_at", "id")
        .first()
    )
    if job is None:
        return None
    now = timezone.now()
    VideoJob.objects.filter(pk=job.pk, status=JobStatus.IN_QUEUE).update(
        status=JobStatus.IN_PROGRESS,
        phase=JobPhase.ENCODING,
        attempt=F("attempt") + 1,
        lease_until=now + timedelta(seconds=lease),
        worker=worker,
        started_at=now,
        progress_step=0,
        progress_total=0,
        updated_at=now,
    )
    job.refresh_from_db()
    record_event(job=job, kind=JobEventKind.STARTED, detail=f"attempt {job.attempt} of {job.max_attempts}")
    return job


def _fenced(job_id: int, attempt: int):
    return VideoJob.objects.filter(pk=job_id, attempt=attempt, status=JobStatus.IN_PROGRESS)


def is_cancel_requested(*, job_id: int) -> bool:
    """Whether a cancel (or a timeout) asked this job to stop: the daemon polls it between steps."""
    return VideoJob.objects.filter(pk=job_id, cancel_requested_at__isnull=False).exists()


@transaction.atomic
def heartbeat(*, job_id: int, attempt: int, lease_seconds: int | None = None) -> bool:
    """Extend the lease. False means the job is no longer this attempt's: stop working on it."""
    lease = lease_seconds if lease_seconds is not None else settings.LEASE_SECONDS
    now = timezone.now()
    return bool(_fenced(job_id, attempt).update(lease_until=now + timedelta(seconds=lease), updated_at=now))


@transaction.atomic
def report_progress(*, job_id: int, attempt: int, phase: str, step: int | None = None, total_steps: int | None = None) -> bool:
    if phase not in JobPhase.values:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(JobPhase.values)}")
    changes: dict[str, Any] = {"phase": phase, "updated_at": timezone.now()}
    if step is not None:
        changes["progress_step"] = step
    if total_steps is not None:
        changes["progress_total"] = total_steps
    written = bool(_fenced(job_id, attempt).update(**changes))
    if written and _progress_milestone(step, total_steps):
        watched = _fenced(job_id, attempt).filter(webhook_events__contains=[WebhookEvent.PROGRESS]).first()
        if watched is not None:
            queue_webhook(job=watched, event=WebhookEvent.PROGRESS)
    return written


def _progress_milestone(step: int | None, total: int | None) -> bool:
    """A "progress" webhook at every tenth of the denoising steps, not at every step."""
    if not step or not total:
        return False
    return step == total or step * 10 // total > (step - 1) * 10 // total


@transaction.atomic
def complete_job(*, job_id: int, attempt: int, result: dict[str, Any], timings: dict[str, float]) -> bool:
    """The daemon finished the attempt: Succeed. False when the attempt is no longer the job's
    (the daemon then drops the video), and for a job deleted (DELETE /v1/videos) while it ran
    and finished before it saw the cancel: it ends Cancelled, as its delete asked, and no video
    of it is kept."""
    now = timezone.now()
    if end_jobs(_fenced(job_id, attempt).filter(deleted_at__isnull=False), status=JobStatus.CANCELLED, now=now,
                reason=CANCELLED_REASON, timings=timings):
        return False
    return bool(end_jobs(_fenced(job_id, attempt), status=JobStatus.SUCCEED, now=now, reason="",
                         phase=JobPhase.DONE, result=result, timings=timings, progress_step=F("progress_total")))


@transaction.atomic
def fail_job(*, job_id: int, attempt: int, code: str, reason: str, timings: dict[str, float] | None = None) -> bool:
    extra = {} if timings is None else {"timings": timings}
    return bool(end_jobs(_fenced(job_id, attempt), status=JobStatus.FAILED, now=timezone.now(),
                         reason=reason, error_code=code, **extra))


@transaction.atomic
def finish_cancelled_job(*, job_id: int, attempt: int, timings: dict[str, float] | None = None) -> bool:
    """The daemon stopped a running job because its cancel was requested."""
    extra = {} if timings is None else {"timings": timings}
    jobs = _fenced(job_id, attempt).filter(cancel_requested_at__isnull=False)
    return bool(end_jobs(jobs, status=JobStatus.CANCELLED, now=timezone.now(), reason=CANCELLED_REASON, **extra))


@transaction.atomic
def release_job(*, job_id: int, attempt: int) -> bool:
    """The daemon gives a running job back (it is shutting down): InQueue, attempt not charged."""
    now = timezone.now()
    released = _fenced(job_id, attempt).update(**back_in_queue(now), max_attempts=F("max_attempts") + 1)
    if released:
        record_event(job=VideoJob.objects.get(pk=job_id), kind=JobEventKind.REQUEUED,
                     detail="given back by its worker (shutting down); the attempt is not charged")
        handoff.notify_ready(str(job_id))
    return bool(released)
