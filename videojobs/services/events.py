"""The one place a job ends (end_jobs) and the one way an event is recorded (record_event):
a JobEvent row, one log line, and the webhook deliveries the job asked for."""
from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from videojobs.models import JobEvent, JobEventKind, JobPhase, JobStatus, VideoJob, WebhookEvent
from videojobs.services.webhooks import queue_webhook

# One line per job event (design: logs), with the requestId and the worker as fields.
event_log = logging.getLogger("videojobs.events")

CANCELLED_REASON = "cancelled by request"


def back_in_queue(now: datetime) -> dict[str, Any]:
    """The columns that put a running job back in the queue, waiting for a worker."""
    return {
        "status": JobStatus.IN_QUEUE,
        "phase": JobPhase.WAITING,
        "lease_until": None,
        "worker": "",
        "progress_step": 0,
        "progress_total": 0,
        "updated_at": now,
    }


_ENDING_EVENT = {
    JobStatus.SUCCEED: JobEventKind.SUCCEEDED,
    JobStatus.FAILED: JobEventKind.FAILED,
    JobStatus.CANCELLED: JobEventKind.CANCELLED,
}


def record_event(*, job: VideoJob, kind: str, detail: str = "") -> JobEvent:
    """Write one event of ``job`` (as it is now): a JobEvent row, one log line, and the webhook
    deliveries the job asked for. Called inside the transaction that made the change, so an
    event exists exactly when its change committed."""
    event = JobEvent.objects.create(job=job, kind=kind, status=job.status, attempt=job.attempt, worker=job.worker,
                                    error_code=job.error_code, detail=detail[:2000])
    event_log.info("job %s %s", job.request_id, kind, extra={
        "event": kind, "request_id": job.request_id, "worker": job.worker, "status": job.status, "phase": job.phase,
        "attempt": job.attempt, "owner": job.owner, "error_code": job.error_code or None,
    })
    webhook = WebhookEvent.COMPLETED if kind in _ENDING_EVENT.values() else (
        WebhookEvent.STARTED if kind == JobEventKind.STARTED else None)
    if webhook is not None:
        queue_webhook(job=job, event=webhook)
    return event


_SERVER_PATH = re.compile(r"(?<![\w:/])/(?:[^\s'\":,;()\[\]/]+/)+[^\s'\":,;()\[\]]*")


def redact_paths(text: str) -> str:
    """A reason without the server's file paths (a client must never see them)."""
    return _SERVER_PATH.sub("<path>", text)


def end_jobs(jobs, *, status: str, now: datetime, reason: str, error_code: str = "", **columns: Any) -> int:
    """The one place a job ends: ``jobs`` (a queryset that guards the transition it ends) move to
    ``status``; each ended job records its event (row, log line, "completed" webhook). Rows are
    locked first, so the guard holds for what is updated. The reason reaches clients, so it loses
    any server path here, whoever ended the job. Returns how many ended."""
    if status not in _ENDING_EVENT:
        raise ValueError(f"{status!r} does not end a job; expected one of {', '.join(_ENDING_EVENT)}")
    reason = redact_paths(reason)
    ids = list(jobs.select_for_update().values_list("pk", flat=True))
    if not ids:
        return 0
    VideoJob.objects.filter(pk__in=ids).update(status=status, reason=reason, error_code=error_code, lease_until=None,
                                               finished_at=now, updated_at=now, **columns)
    for job in VideoJob.objects.filter(pk__in=ids).order_by("pk"):
        record_event(job=job, kind=_ENDING_EVENT[status], detail=reason)
    return len(ids)
