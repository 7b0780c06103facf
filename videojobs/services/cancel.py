"""A client's cancel: a queued job ends at once, a running one is asked to stop (every rank
stops at the same denoising step) and ends when its daemon says so."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from videojobs import selectors
from videojobs.errors import JobAlreadyFinished, JobNotFound
from videojobs.models import JobEventKind, JobStatus, VideoJob
from videojobs.services.events import CANCELLED_REASON, end_jobs, record_event


@transaction.atomic
def request_cancel(*, request_id: str, owner: str | None = None) -> VideoJob:
    """InQueue -> Cancelled at once; InProgress -> cancel requested (the daemon stops it).

    Cancelling a cancelled job is a no-op; a job that already succeeded or failed raises
    JobAlreadyFinished; an unknown or malformed id (or another owner's) raises JobNotFound.
    """
    now = timezone.now()
    job = selectors.jobs_by_request_id(request_id=request_id, owner=owner).select_for_update().first()
    if job is None:
        raise JobNotFound(request_id)
    if job.status == JobStatus.IN_QUEUE:
        end_jobs(VideoJob.objects.filter(pk=job.pk, status=JobStatus.IN_QUEUE), status=JobStatus.CANCELLED, now=now,
                 reason=CANCELLED_REASON, cancel_requested_at=now)
    elif job.status == JobStatus.IN_PROGRESS:
        if VideoJob.objects.filter(
            pk=job.pk, status=JobStatus.IN_PROGRESS, cancel_requested_at__isnull=True
        ).update(cancel_requested_at=now, updated_at=now):
            job.refresh_from_db()
            record_event(job=job, kind=JobEventKind.CANCEL_REQUESTED)
    elif job.status in (JobStatus.SUCCEED, JobStatus.FAILED):
        raise JobAlreadyFinished(job)
    job.refresh_from_db()
    return job
