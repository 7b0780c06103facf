"""An operator's actions on one job (the admin's buttons): requeue, retry as a new job, delete
its video."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from videojobs import selectors
from videojobs.errors import InputGone, JobNotFinished
from videojobs.models import UNFINISHED_STATUSES, JobEventKind, JobPhase, JobStatus, VideoJob
from videojobs.previews import remove_previews
from videojobs.services import handoff
from videojobs.services.events import back_in_queue, record_event
from videojobs.services.retention import expired_result
from videojobs.services.submit import adopt_checked_input, submit_job


@transaction.atomic
def requeue_job(*, job_id: int) -> bool:
    """Operator action: put a Failed or Cancelled job back in the queue with fresh attempts."""
    now = timezone.now()
    job = VideoJob.objects.select_for_update().filter(pk=job_id, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).first()
    if job is None:
        return False
    input_ready = bool(job.input_image) and job.input_ready_at is not None
    VideoJob.objects.filter(pk=job.pk, status=job.status).update(
        **{
            **back_in_queue(now),
            "phase": JobPhase.WAITING if input_ready else JobPhase.PREPARING,
            "input_ready_at": job.input_ready_at if input_ready else None,
            "max_attempts": F("attempt") + settings.JOB_MAX_ATTEMPTS,
            "cancel_requested_at": None,
            "error_code": "",
            "reason": "",
            "result": {},
            "timings": {},
            "finished_at": None,
        }
    )
    job.refresh_from_db()
    record_event(job=job, kind=JobEventKind.REQUEUED, detail="requeued by an operator")
    if input_ready:
        handoff.notify_ready(str(job.pk))
    else:
        transaction.on_commit(lambda: handoff.enqueue_prepare_input(job.pk))
    return True


OPERATOR_DELETED_REASON = "the video was deleted by an operator; submit the job again"


@transaction.atomic
def retry_as_new_job(*, job_id: int) -> VideoJob:
    """Operator action: submit a finished job again as a new job (new requestId, fresh attempts)
    with its prompt, parameters, owner and webhook. It goes through submit_job, so the owner's
    gates and the queue limit apply as to any submit. The stored input image, when there is one,
    was decoded and checked already: it is copied under the new job's name and marked ready at
    once (a fetched one is not fetched again; an uploaded one is submitted as the upload it was),
    and the new job's prepare_input task then finds nothing to do; without it the image_url is
    fetched again. The original job is not touched.

    Raises JobNotFinished, InputGone, and whatever submit_job raises (OwnerLimit, QueueFull,
    WebhooksDisabled, WebhookURLError, ImageInputError)."""
    source = VideoJob.objects.get(pk=job_id)
    if source.status in UNFINISHED_STATUSES:
        raise JobNotFinished(source)
    stored = Path(settings.MEDIA_ROOT) / source.input_image if source.input_image else None
    image_bytes = stored.read_bytes() if stored is not None and stored.is_file() else None
    if image_bytes is None and not source.image_url:
        raise InputGone(f"the uploaded input image of job {source.request_id} is gone; submit it again")
    job, _ = submit_job(
        prompt=source.prompt,
        params=dict(source.params),
        image_url=source.image_url,
        image_bytes=None if source.image_url else image_bytes,
        negative_prompt=source.negative_prompt,
        owner=source.owner,
        webhook_url=source.webhook_url,
        webhook_events=list(source.webhook_events) or None,
        note=f"retry of {source.request_id} by an operator",
    )
    if image_bytes is not None:
        adopt_checked_input(job=job, data=image_bytes, sha256=source.input_sha256)  # fetched or uploaded, checked
    job.refresh_from_db()
    return job


@transaction.atomic
def delete_job_output(*, job_id: int) -> bool:
    """Operator action: delete a finished job's video now. Its result is marked expired as the
    disk quota sweep does, so the download answers 410 with OPERATOR_DELETED_REASON. The input
    image stays (a retry as a new job reuses it). False when there is no video to delete (the
    job did not succeed, or its video already expired). Raises JobNotFinished for a queued or
    running job."""
    job = VideoJob.objects.select_for_update().get(pk=job_id)
    if job.status in UNFINISHED_STATUSES:
        raise JobNotFinished(job)
    if not selectors.has_video(job=job):
        return False
    result = expired_result(job.result or {}, reason=OPERATOR_DELETED_REASON)
    VideoJob.objects.filter(pk=job.pk, status=JobStatus.SUCCEED).update(result=result, updated_at=timezone.now())
    video = selectors.video_path(job=job)
    # Only once the row says so: a rolled-back change must find its video still there.
    transaction.on_commit(lambda: (video.unlink(missing_ok=True), remove_previews(video)))
    return True
