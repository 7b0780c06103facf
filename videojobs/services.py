"""Every write to a job or a worker row. The state machine of design section 3.

Each transition is one guarded ``UPDATE ... WHERE status = ...``: a transition that lost a
race updates nothing and reports it, so no interleaving can move a finished job. The
daemon's writes are also fenced on (id, attempt, InProgress), so a zombie whose lease was
rescued cannot overwrite the attempt that replaced it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from videojobs.models import (
    FINISHED_STATUSES,
    UNFINISHED_STATUSES,
    DeliveryState,
    InferenceWorker,
    JobEvent,
    JobEventKind,
    JobPhase,
    JobStatus,
    MetricTotal,
    VideoJob,
    WebhookDelivery,
    WebhookEvent,
    WorkerState,
)

logger = logging.getLogger(__name__)
# One line per job event (design: logs), with the requestId and the worker as fields.
event_log = logging.getLogger("videojobs.events")

# The channel the daemon LISTENs on; prepare_input NOTIFYs it when a job becomes claimable.
READY_CHANNEL = "videojobs_ready"
# pg_advisory_xact_lock key serialising the admission gate (count + insert).
_ADMISSION_LOCK_KEY = 0x56494430  # "VID0"


class QueueFull(Exception):
    def __init__(self, unfinished: int, limit: int) -> None:
        super().__init__(f"{unfinished} unfinished jobs; the limit is {limit}")
        self.unfinished = unfinished
        self.limit = limit


class OwnerLimit(Exception):
    """One client's share: its unfinished jobs, or its submits in the last minute."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdempotencyConflict(Exception):
    def __init__(self, job: VideoJob) -> None:
        super().__init__(f"the Idempotency-Key was used for job {job.request_id} with a different request")
        self.job = job


class JobAlreadyFinished(Exception):
    def __init__(self, job: VideoJob) -> None:
        super().__init__(f"job {job.request_id} already ended as {job.status}")
        self.job = job


CANCELLED_REASON = "cancelled by request"


class WebhooksDisabled(Exception):
    """A webhook_url was given but this server has no WEBHOOK_SECRET to sign with."""


def _notify_ready(payload: str) -> None:
    """Wake idle daemons. NOTIFY is delivered at commit, once the claimable row is visible."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [READY_CHANNEL, payload])


def _back_in_queue(now: datetime) -> dict[str, Any]:
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


# --- job events: the history, the log line, the webhooks --------------------------------

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


def queue_webhook(*, job: VideoJob, event: str) -> WebhookDelivery | None:
    """A delivery of ``event`` with the job's status document, sent once the transaction commits."""
    if not job.webhook_url or event not in (job.webhook_events or [WebhookEvent.COMPLETED]):
        return None
    from videojobs import selectors

    delivery = WebhookDelivery.objects.create(job=job, event=event, url=job.webhook_url,
                                              payload=selectors.webhook_document(job=job), next_attempt_at=timezone.now())
    transaction.on_commit(lambda: _enqueue_webhook(delivery.pk))
    return delivery


def _enqueue_webhook(delivery_id: int) -> None:
    from django_q.tasks import async_task

    async_task("videojobs.tasks.deliver_webhook", delivery_id, task_name=f"webhook-{delivery_id}")


def end_jobs(jobs, *, status: str, now: datetime, reason: str, error_code: str = "", **columns: Any) -> int:
    """The one place a job ends: ``jobs`` (a queryset that guards the transition it ends) move to
    ``status``; each ended job records its event (row, log line, "completed" webhook). Rows are
    locked first, so the guard holds for what is updated. Returns how many ended."""
    if status not in _ENDING_EVENT:
        raise ValueError(f"{status!r} does not end a job; expected one of {', '.join(_ENDING_EVENT)}")
    ids = list(jobs.select_for_update().values_list("pk", flat=True))
    if not ids:
        return 0
    VideoJob.objects.filter(pk__in=ids).update(status=status, reason=reason, error_code=error_code, lease_until=None,
                                               finished_at=now, updated_at=now, **columns)
    for job in VideoJob.objects.filter(pk__in=ids).order_by("pk"):
        record_event(job=job, kind=_ENDING_EVENT[status], detail=reason)
    return len(ids)


# --- submit and input preparation -----------------------------------------------------


def request_fingerprint(*, prompt: str, image_url: str, negative_prompt: str, params: dict[str, Any]) -> str:
    canonical = json.dumps({"prompt": prompt, "image_url": image_url, "negative_prompt": negative_prompt,
                            "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_admission(owner: str, now: datetime) -> None:
    """The gates, under the admission lock: this owner's unfinished jobs and submits in the last
    minute, then the whole queue (MAX_CONCURRENT_TASKS). Two queries, both on indexes."""
    # 1. Unfinished jobs: everyone's and this owner's, in one pass over the unfinished rows.
    counts = VideoJob.objects.filter(status__in=UNFINISHED_STATUSES).aggregate(
        everyone=Count("pk"), mine=Count("pk", filter=Q(owner=owner))
    )
    if counts["mine"] >= settings.OWNER_MAX_UNFINISHED:
        raise OwnerLimit(f"you have {counts['mine']} unfinished jobs; the limit per client is "
                         f"{settings.OWNER_MAX_UNFINISHED}", retry_after=settings.RETRY_AFTER_SECONDS)
    # 2. The rate: over the limit when the limit-th most recent submit is less than a minute old;
    #    it leaves the window (and a slot opens) 60 s after the submit that is that many back.
    limit = settings.OWNER_SUBMITS_PER_MINUTE
    oldest_counted = (VideoJob.objects.filter(owner=owner, created_at__gt=now - timedelta(seconds=60))
                      .order_by("-created_at").values_list("created_at", flat=True)[limit - 1:limit].first())
    if oldest_counted is not None:
        wait = (oldest_counted + timedelta(seconds=60) - now).total_seconds()
        raise OwnerLimit(f"you submitted {limit} jobs in the last minute; the limit per client is {limit}",
                         retry_after=max(1, math.ceil(wait)))
    if counts["everyone"] >= settings.MAX_CONCURRENT_TASKS:
        raise QueueFull(counts["everyone"], settings.MAX_CONCURRENT_TASKS)


def submit_job(
    *,
    prompt: str,
    params: dict[str, Any],
    image_url: str = "",
    image_bytes: bytes | None = None,
    negative_prompt: str = "",
    owner: str = "",
    idempotency_key: str | None = None,
    webhook_url: str = "",
    webhook_events: list[str] | None = None,
    note: str = "",
) -> tuple[VideoJob, bool]:
    """Admit a job (or return the one this owner already submitted with this idempotency key).

    The input is ``image_url`` (fetched later by prepare_input) or ``image_bytes`` (an upload:
    checked and re-encoded now, under the same limits as a fetched image, so the job is ready to
    claim at once). ``note`` starts the detail of the job's "submitted" event (e.g. what it
    retries). Returns (job, created). Raises ImageInputError for an unusable upload,
    WebhooksDisabled, IdempotencyConflict, OwnerLimit, QueueFull.
    """
    if (image_bytes is None) == (not image_url):
        raise ValueError("give exactly one of image_url and image_bytes")
    # 1. The webhook_url under the image fetcher's address rules; the upload decoded and
    #    re-encoded. Both before any lock is taken: a lookup or a large picture takes time.
    if webhook_url:
        from videojobs import webhooks

        if not settings.WEBHOOK_SECRET:
            raise WebhooksDisabled("webhooks are off on this server (WEBHOOK_SECRET is not set)")
        webhooks.check_url(webhook_url, policy=webhooks.policy_from_settings())
    image = None if image_bytes is None else _checked_upload(image_bytes)
    source = image_url or f"upload:sha256:{image.sha256}"
    fingerprint = request_fingerprint(prompt=prompt, image_url=source, negative_prompt=negative_prompt,
                                      params={**params, "webhook_url": webhook_url, "webhook_events": webhook_events})
    return _admit(prompt=prompt, params=params, image_url=image_url, image=image, negative_prompt=negative_prompt,
                  owner=owner, idempotency_key=idempotency_key, fingerprint=fingerprint, webhook_url=webhook_url,
                  webhook_events=list(webhook_events or [WebhookEvent.COMPLETED]) if webhook_url else [], note=note)


def _checked_upload(data: bytes):
    """An uploaded image under a fetched image's limits (size, formats, pixels), re-encoded as
    PNG. Raises ImageInputError with a reason about the upload."""
    from videojobs.image_input import CODE_NOT_AN_IMAGE, CODE_TOO_LARGE, ImageInputError, normalize_image

    if len(data) > settings.IMAGE_MAX_BYTES:
        raise ImageInputError(f"the file is {len(data)} bytes; the limit is {settings.IMAGE_MAX_BYTES}", CODE_TOO_LARGE)
    try:
        return normalize_image(data, max_pixels=settings.IMAGE_MAX_PIXELS)
    except ImageInputError as exc:
        if exc.code == CODE_NOT_AN_IMAGE:
            raise ImageInputError("the file is not a JPEG, PNG, WebP, GIF or BMP image (or it is corrupt)",
                                  exc.code) from None
        raise


@transaction.atomic
def _admit(*, prompt: str, params: dict[str, Any], image_url: str, image, negative_prompt: str, owner: str,
           idempotency_key: str | None, fingerprint: str, webhook_url: str, webhook_events: list[str],
           note: str) -> tuple[VideoJob, bool]:
    # 1. Serialise admissions so two concurrent submits cannot both pass the gates.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADMISSION_LOCK_KEY])
    # 2. A retried submit with the same key gets the original job, even when the queue is full.
    if idempotency_key:
        existing = VideoJob.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if existing is not None:
            if existing.request_hash and existing.request_hash != fingerprint:
                raise IdempotencyConflict(existing)
            return existing, False
    # 3. The gates: this owner's share, then the whole queue.
    _check_admission(owner, timezone.now())
    # 4. Insert. A URL goes to django-q2 once the row is committed; an upload is stored now.
    job = VideoJob.objects.create(
        prompt=prompt,
        negative_prompt=negative_prompt,
        image_url=image_url,
        params=params,
        owner=owner,
        idempotency_key=idempotency_key or None,
        request_hash=fingerprint,
        max_attempts=settings.JOB_MAX_ATTEMPTS,
        status=JobStatus.IN_QUEUE,
        phase=JobPhase.PREPARING,
        webhook_url=webhook_url,
        webhook_events=webhook_events,
    )
    source = "upload" if image is not None else image_url
    record_event(job=job, kind=JobEventKind.SUBMITTED, detail=f"{note} ({source})" if note else source)
    if image is None:
        transaction.on_commit(lambda: _enqueue_prepare_input(job.pk))
    else:
        relative = _store_input(request_id=job.request_id, data=image.data)
        mark_input_ready(job_id=job.pk, image_path=str(relative), sha256=image.sha256)
        job.refresh_from_db()
    return job, True


def _store_input(*, request_id: str, data: bytes) -> Path:
    """Write a job's normalised input image under MEDIA_ROOT; returns its relative path."""
    relative = Path("inputs") / f"{request_id}.png"
    target = Path(settings.MEDIA_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".png.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return relative


def _enqueue_prepare_input(job_id: int) -> None:
    from django_q.tasks import async_task

    async_task("videojobs.tasks.prepare_input", job_id, task_name=f"prepare_input-{job_id}")


def prepare_job_input(*, job_id: int) -> VideoJob | None:
    """Fetch, check and store the job's image, then make the job claimable.

    Network I/O happens outside any transaction; the state change is one guarded update.
    Returns the job, or None when it no longer needs an input (cancelled, already ready).
    """
    from videojobs.image_input import FetchPolicy, ImageInputError, fetch_image_bytes, normalize_image, parse_networks

    job = VideoJob.objects.filter(pk=job_id, status=JobStatus.IN_QUEUE, input_ready_at__isnull=True).first()
    if job is None:
        return None
    policy = FetchPolicy(
        max_bytes=settings.IMAGE_MAX_BYTES,
        connect_timeout=settings.IMAGE_CONNECT_TIMEOUT,
        total_timeout=settings.IMAGE_TOTAL_TIMEOUT,
        allowed_networks=parse_networks(",".join(settings.IMAGE_URL_ALLOWED_NETWORKS)),
    )
    # 1. Download and decode; a user-facing reason on any failure.
    try:
        data = fetch_image_bytes(job.image_url, policy=policy)
        image = normalize_image(data, max_pixels=settings.IMAGE_MAX_PIXELS)
    except ImageInputError as exc:
        fail_input(job_id=job.pk, code=exc.code, reason=exc.reason)
        return VideoJob.objects.get(pk=job.pk)
    # 2. Store the normalised copy under a name that is unique per job.
    relative = _store_input(request_id=job.request_id, data=image.data)
    # 3. Make it claimable, or drop the file when the job was cancelled meanwhile.
    if not mark_input_ready(job_id=job.pk, image_path=str(relative), sha256=image.sha256):
        (Path(settings.MEDIA_ROOT) / relative).unlink(missing_ok=True)
        return None
    return VideoJob.objects.get(pk=job.pk)


@transaction.atomic
def mark_input_ready(*, job_id: int, image_path: str, sha256: str) -> bool:
    now = timezone.now()
    updated = VideoJob.objects.filter(pk=job_id, status=JobStatus.IN_QUEUE, input_ready_at__isnull=True).update(
        input_image=image_path,
        input_sha256=sha256,
        input_ready_at=now,
        phase=JobPhase.WAITING,
        updated_at=now,
    )
    if updated:
        record_event(job=VideoJob.objects.get(pk=job_id), kind=JobEventKind.INPUT_READY)
        _notify_ready(str(job_id))
    return bool(updated)


@transaction.atomic
def fail_input(*, job_id: int, code: str, reason: str) -> bool:
    jobs = VideoJob.objects.filter(pk=job_id, status=JobStatus.IN_QUEUE)
    return bool(end_jobs(jobs, status=JobStatus.FAILED, now=timezone.now(), reason=reason, error_code=code))


# --- the daemon's side: claim, heartbeat, progress, completion -----------------------


@transaction.atomic
def claim_next_job(*, worker: str, lease_seconds: int | None = None) -> VideoJob | None:
    """Claim the oldest ready job: one transaction, FOR UPDATE SKIP LOCKED, attempt += 1."""
    lease = lease_seconds if lease_seconds is not None else settings.LEASE_SECONDS
    job = (
        VideoJob.objects.select_for_update(skip_locked=True)
        .filter(status=JobStatus.IN_QUEUE, input_ready_at__isnull=False, cancel_requested_at__isnull=True)
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
    return bool(end_jobs(_fenced(job_id, attempt), status=JobStatus.SUCCEED, now=timezone.now(), reason="",
                         phase=JobPhase.DONE, result=result, timings=timings, progress_step=F("progress_total")))


_SERVER_PATH = re.compile(r"(?<![\w:/])/(?:[^\s'\":,;()\[\]/]+/)+[^\s'\":,;()\[\]]*")


def redact_paths(text: str) -> str:
    """A reason without the server's file paths (a client must never see them)."""
    return _SERVER_PATH.sub("<path>", text)


@transaction.atomic
def fail_job(*, job_id: int, attempt: int, code: str, reason: str, timings: dict[str, float] | None = None) -> bool:
    extra = {} if timings is None else {"timings": timings}
    return bool(end_jobs(_fenced(job_id, attempt), status=JobStatus.FAILED, now=timezone.now(),
                         reason=redact_paths(reason), error_code=code, **extra))


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
    released = _fenced(job_id, attempt).update(**_back_in_queue(now), max_attempts=F("max_attempts") + 1)
    if released:
        record_event(job=VideoJob.objects.get(pk=job_id), kind=JobEventKind.REQUEUED,
                     detail="given back by its worker (shutting down); the attempt is not charged")
        _notify_ready(str(job_id))
    return bool(released)


# --- cancel ---------------------------------------------------------------------------


@transaction.atomic
def request_cancel(*, request_id: str, owner: str | None = None) -> VideoJob:
    """InQueue -> Cancelled at once; InProgress -> cancel requested (the daemon stops it).

    Cancelling a cancelled job is a no-op; a job that already succeeded or failed raises
    JobAlreadyFinished. Raises VideoJob.DoesNotExist for an unknown id.
    """
    now = timezone.now()
    jobs = VideoJob.objects.select_for_update()
    job = (jobs if owner is None else jobs.filter(owner=owner)).get(request_id=request_id)
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
            **_back_in_queue(now),
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
        _notify_ready(str(job.pk))
    else:
        transaction.on_commit(lambda: _enqueue_prepare_input(job.pk))
    return True


# --- sweeps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RescueReport:
    requeued: int
    failed: int
    cancelled: int


@transaction.atomic
def rescue_expired_leases(*, now: datetime | None = None) -> RescueReport:
    """Jobs whose daemon stopped heartbeating: back to InQueue, or ended once attempts are spent."""
    now = now or timezone.now()
    expired = list(
        VideoJob.objects.select_for_update(skip_locked=True).filter(
            status=JobStatus.IN_PROGRESS, lease_until__lt=now
        )
    )
    report = _rescue(expired, now)
    if expired:
        logger.warning("lease rescue: %d requeued, %d failed, %d cancelled", *astuple(report))
    return report


def _rescue(jobs: list[VideoJob], now: datetime) -> RescueReport:
    """Running jobs whose worker is gone: cancelled if asked, failed once their attempts are spent,
    else back in the queue (the attempt their worker took stays counted)."""
    requeued = failed = cancelled = 0
    for job in jobs:
        guarded = VideoJob.objects.filter(pk=job.pk, status=JobStatus.IN_PROGRESS, attempt=job.attempt)
        if job.cancel_requested_at is not None:
            cancelled += end_jobs(guarded, status=JobStatus.CANCELLED, now=now, reason=CANCELLED_REASON)
        elif job.attempt >= job.max_attempts:
            failed += end_jobs(guarded, status=JobStatus.FAILED, now=now, error_code="WORKER_LOST",
                               reason=f"the inference worker stopped responding on each of {job.attempt} attempts")
        elif guarded.update(**_back_in_queue(now)):
            requeued += 1
            record_event(job=VideoJob.objects.get(pk=job.pk), kind=JobEventKind.REQUEUED,
                         detail=f"worker {job.worker} stopped responding during attempt {job.attempt}")
    if requeued:
        _notify_ready("rescued")
    return RescueReport(requeued=requeued, failed=failed, cancelled=cancelled)


@transaction.atomic
def retire_dead_predecessors(*, name: str, host: str, pid: int, alive: Callable[[int], bool]) -> RescueReport:
    """A daemon starting on this host: the rows of daemons here that died without a word (same
    name, or the default host:pid names; their pid gone) turn lost, and their running jobs are
    rescued now rather than when their leases lapse. So is any running job under our own name:
    we have not claimed one yet, so it is a dead predecessor's."""
    now = timezone.now()
    dead = [
        worker.name
        for worker in InferenceWorker.objects.select_for_update().filter(host=host).exclude(
            state__in=[WorkerState.STOPPED, WorkerState.LOST]
        )
        if worker.pid != pid and (worker.name == name or worker.name.startswith(f"{host}:")) and not alive(worker.pid)
    ]
    InferenceWorker.objects.filter(name__in=dead).update(
        state=WorkerState.LOST, current_job=None, detail=f"found dead by its successor at {now:%Y-%m-%d %H:%M:%S} UTC"
    )
    orphans = list(VideoJob.objects.select_for_update().filter(status=JobStatus.IN_PROGRESS, worker__in=[*dead, name]))
    report = _rescue(orphans, now)
    if dead or orphans:
        logger.warning("retired dead workers %s; their running jobs: %d requeued, %d failed, %d cancelled",
                       dead, *astuple(report))
    return report


@transaction.atomic
def mark_lost_workers(*, now: datetime | None = None) -> RescueReport:
    """Sweep: workers silent for WORKER_LOST_SECONDS turn lost; their running jobs are rescued."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.WORKER_LOST_SECONDS)
    silent = list(
        InferenceWorker.objects.select_for_update(skip_locked=True)
        .filter(state__in=[WorkerState.LOADING, WorkerState.IDLE, WorkerState.BUSY], heartbeat_at__lt=cutoff)
        .values_list("name", flat=True)
    )
    if not silent:
        return RescueReport(0, 0, 0)
    InferenceWorker.objects.filter(name__in=silent).update(
        state=WorkerState.LOST, current_job=None, detail=f"no heartbeat since before {cutoff:%Y-%m-%d %H:%M:%S} UTC"
    )
    orphans = list(VideoJob.objects.select_for_update(skip_locked=True).filter(status=JobStatus.IN_PROGRESS, worker__in=silent))
    report = _rescue(orphans, now)
    logger.warning("workers lost (no heartbeat for %d s): %s; their running jobs: %d requeued, %d failed, %d cancelled",
                   settings.WORKER_LOST_SECONDS, silent, *astuple(report))
    return report


@transaction.atomic
def fail_timed_out_jobs(*, now: datetime | None = None, grace_seconds: int = 60) -> int:
    """Backstop for TASK_TIMEOUT when a daemon cannot stop a job itself.

    The daemon stops a job at the step after TASK_TIMEOUT; this sweep ends jobs that ran
    past TASK_TIMEOUT plus a grace period anyway. The daemon's fenced writes then fail and
    it drops the job.
    """
    now = now or timezone.now()
    deadline = now - timedelta(seconds=settings.TASK_TIMEOUT + grace_seconds)
    return end_jobs(VideoJob.objects.filter(status=JobStatus.IN_PROGRESS, started_at__lt=deadline),
                    status=JobStatus.FAILED, now=now, error_code="TIMEOUT",
                    reason=f"the job ran longer than TASK_TIMEOUT ({settings.TASK_TIMEOUT} s)")


def requeue_stale_inputs(*, older_than_seconds: int = 600) -> int:
    """Re-enqueue prepare_input for jobs whose input task was lost (e.g. qcluster killed)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    stale = list(
        VideoJob.objects.filter(
            status=JobStatus.IN_QUEUE, input_ready_at__isnull=True, updated_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    for job_id in stale:
        VideoJob.objects.filter(pk=job_id).update(updated_at=timezone.now())
        _enqueue_prepare_input(job_id)
    return len(stale)


# --- webhook delivery -------------------------------------------------------------------


def webhook_retry_delay(*, attempts: int) -> int:
    """Seconds before the next try after ``attempts`` failed ones: WEBHOOK_RETRY_SECONDS,
    tripled each time, at most an hour."""
    return min(settings.WEBHOOK_RETRY_SECONDS * 3 ** max(attempts - 1, 0), 3600)


@transaction.atomic
def _take_delivery(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    """Claim a due delivery for one sender: its next try moves past this send's deadline, so a
    second sender (the sweep, a duplicate task) skips it meanwhile."""
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT + 30)
    taken = WebhookDelivery.objects.filter(pk=delivery_id, state=DeliveryState.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).update(next_attempt_at=lease)
    return WebhookDelivery.objects.select_related("job").get(pk=delivery_id) if taken else None


def deliver_webhook(*, delivery_id: int, now: datetime | None = None) -> str | None:
    """Send one due delivery and record the outcome: delivered; or pending with a later try; or
    failed once WEBHOOK_MAX_ATTEMPTS tries failed. Returns the new state (None: not due)."""
    from videojobs import webhooks

    delivery = _take_delivery(delivery_id, now or timezone.now())
    if delivery is None:
        return None
    # 1. Sign the stored body (the status document at the time of the event) and send it.
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    stamp = int(timezone.now().timestamp())
    headers = {
        webhooks.TIMESTAMP_HEADER: str(stamp),
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret=settings.WEBHOOK_SECRET, timestamp=stamp, body=body),
        webhooks.EVENT_HEADER: delivery.event,
        webhooks.ID_HEADER: str(delivery.pk),
    }
    outcome = webhooks.post(delivery.url, body=body, headers=headers, policy=webhooks.policy_from_settings())
    # 2. Record it, outside any lock held during the send.
    return _record_attempt(delivery, outcome)


@transaction.atomic
def _record_attempt(delivery: WebhookDelivery, outcome) -> str:
    now = timezone.now()
    attempts = delivery.attempts + 1
    entry = {"at": now.isoformat(), "status_code": outcome.status_code, "error": outcome.error,
             "seconds": round(outcome.seconds, 3)}
    if outcome.ok:
        state, next_at = DeliveryState.DELIVERED, None
    elif attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        state, next_at = DeliveryState.FAILED, None
    else:
        state, next_at = DeliveryState.PENDING, now + timedelta(seconds=webhook_retry_delay(attempts=attempts))
    WebhookDelivery.objects.filter(pk=delivery.pk, state=DeliveryState.PENDING).update(
        state=state, attempts=attempts, next_attempt_at=next_at, last_attempt_at=now,
        last_status_code=outcome.status_code, last_error=outcome.error, log=[*delivery.log, entry],
        delivered_at=now if outcome.ok else None)
    level = logging.INFO if outcome.ok else logging.WARNING
    event_log.log(level, "webhook %s of job %s: %s", delivery.event, delivery.job.request_id,
                  "delivered" if outcome.ok else f"{outcome.error} (try {attempts}, now {state})",
                  extra={"event": f"webhook_{state}", "request_id": delivery.job.request_id,
                         "worker": delivery.job.worker})
    return state


def deliver_due_webhooks(*, now: datetime | None = None, limit: int = 200) -> int:
    """Sweep: hand every pending delivery whose next try is due to django-q2 (retries, and first
    tries whose task was lost). Returns how many were handed on."""
    now = now or timezone.now()
    due = list(WebhookDelivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lte=now)
               .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    for delivery_id in due:
        _enqueue_webhook(delivery_id)
    return len(due)


@transaction.atomic
def redeliver_webhook(*, delivery_id: int) -> bool:
    """Operator action: try a delivery again now (also one that gave up). One more attempt: a
    delivery past WEBHOOK_MAX_ATTEMPTS that fails again is failed again, not retried."""
    updated = WebhookDelivery.objects.filter(pk=delivery_id).exclude(state=DeliveryState.DELIVERED).update(
        state=DeliveryState.PENDING, next_attempt_at=timezone.now())
    if updated:
        transaction.on_commit(lambda: _enqueue_webhook(delivery_id))
    return bool(updated)


# --- the worker registry --------------------------------------------------------------


@transaction.atomic
def register_worker(
    *, name: str, host: str, pid: int, world_size: int, topology: dict[str, Any], device: str, model: str
) -> InferenceWorker:
    now = timezone.now()
    worker, _ = InferenceWorker.objects.update_or_create(
        name=name,
        defaults={
            "host": host,
            "pid": pid,
            "world_size": world_size,
            "topology": topology,
            "device": device,
            "model": model,
            "state": WorkerState.LOADING,
            "current_job": None,
            "heartbeat_at": now,
            "detail": "",
        },
    )
    return worker


@transaction.atomic
def update_worker(
    *,
    name: str,
    state: str,
    current_job_id: int | None = None,
    detail: str = "",
    job_done: bool = False,
    topology: dict[str, Any] | None = None,
) -> None:
    if state not in WorkerState.values:
        raise ValueError(f"unknown worker state {state!r}")
    changes: dict[str, Any] = {
        "state": state,
        "current_job_id": current_job_id,
        "heartbeat_at": timezone.now(),
        "detail": detail,
    }
    if job_done:
        changes["jobs_done"] = F("jobs_done") + 1
    if topology is not None:
        changes["topology"] = topology
    InferenceWorker.objects.filter(name=name).update(**changes)


@transaction.atomic
def worker_heartbeat(*, name: str) -> None:
    InferenceWorker.objects.filter(name=name).update(heartbeat_at=timezone.now())


@transaction.atomic
def purge_finished_jobs(*, older_than_days: int) -> int:
    """History sweep: delete finished jobs older than the retention period (files too)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = VideoJob.objects.filter(status__in=FINISHED_STATUSES, finished_at__lt=cutoff)
    _carry_metric_totals(jobs=old)
    for job in old.only("input_image", "result"):
        _delete_job_files(job)
    _, per_model = old.delete()  # events and deliveries go with their jobs
    return per_model.get(VideoJob._meta.label, 0)


def _carry_metric_totals(*, jobs) -> None:
    """Before ``jobs`` are deleted: add what /metrics counts of them to MetricTotal, so that its
    histograms and counters keep counting them (a counter that went down would read as a reset)."""
    from videojobs import selectors

    for name, rows in selectors.history_series(jobs=jobs).items():
        for labels, counts in rows.items():
            if not counts.count:
                continue
            total, _ = MetricTotal.objects.select_for_update().get_or_create(
                name=name, key="\x1f".join(labels), defaults={"labels": list(labels)})
            total.cumulative = [a + b for a, b in zip(total.cumulative, counts.cumulative)] or list(counts.cumulative)
            total.count += counts.count
            total.sum += counts.sum
            total.save(update_fields=["cumulative", "count", "sum"])


def _delete_job_files(job: VideoJob) -> None:
    if job.input_image:
        (Path(settings.MEDIA_ROOT) / job.input_image).unlink(missing_ok=True)
    video = (job.result or {}).get("video_file")
    if video:
        (Path(settings.OUTPUT_DIR) / video).unlink(missing_ok=True)


def enforce_output_quota(*, max_bytes: int | None = None) -> int:
    """Disk quota sweep: delete the oldest finished videos until OUTPUT_DIR fits its quota."""
    limit = max_bytes if max_bytes is not None else int(settings.MAX_OUTPUT_DIR_SIZE_GB * 1024**3)
    folder = Path(settings.OUTPUT_DIR)
    if not folder.exists():
        return 0
    files = sorted((p for p in folder.glob("*.mp4") if p.is_file()), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    removed = 0
    running = set(
        VideoJob.objects.filter(status__in=UNFINISHED_STATUSES).values_list("request_id", flat=True)
    )
    for path in files:
        if total <= limit:
            break
        if path.stem in running:
            continue
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        total -= size
        removed += 1
        stored = VideoJob.objects.filter(request_id=path.stem).values_list("result", flat=True).first()
        VideoJob.objects.filter(request_id=path.stem).update(
            result=_expired_result(stored or {}, reason=EXPIRED_REASON), updated_at=timezone.now()
        )
    return removed


EXPIRED_REASON = "the video was deleted to keep OUTPUT_DIR within MAX_OUTPUT_DIR_SIZE; submit the job again"


def _expired_result(result: dict[str, Any], *, reason: str) -> dict[str, Any]:
    """A job's result once its video is deleted: what ran is kept, the video is marked gone."""
    return {**result, "expired": True, "expired_at": timezone.now().timestamp(), "expired_reason": reason}


# --- operator actions ---


class JobNotFinished(Exception):
    """An operator action meant for a finished job was asked of one still queued or running."""

    def __init__(self, job: VideoJob) -> None:
        super().__init__(f"job {job.request_id} is still {job.status}; cancel it first")
        self.job = job


class InputGone(Exception):
    """A job to retry has neither its stored input image nor an image_url to fetch again."""


OPERATOR_DELETED_REASON = "the video was deleted by an operator; submit the job again"


@transaction.atomic
def retry_as_new_job(*, job_id: int) -> VideoJob:
    """Operator action: submit a finished job again as a new job (new requestId, fresh attempts)
    with its prompt, parameters, owner and webhook. It goes through submit_job, so the owner's
    gates and the queue limit apply as to any submit. The stored input image, when there is one,
    is copied under the new job's name and marked ready as an upload is (a fetched one is not
    fetched again; an uploaded one is submitted as the upload it was); without it the image_url
    is fetched again. The original job is not touched.

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
    if source.image_url and image_bytes is not None:
        # The image the source fetched and checked; its prepare_input task then finds it ready.
        relative = _store_input(request_id=job.request_id, data=image_bytes)
        mark_input_ready(job_id=job.pk, image_path=str(relative), sha256=source.input_sha256)
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
    from videojobs import selectors

    if not selectors.has_video(job=job):
        return False
    result = _expired_result(job.result or {}, reason=OPERATOR_DELETED_REASON)
    VideoJob.objects.filter(pk=job.pk, status=JobStatus.SUCCEED).update(result=result, updated_at=timezone.now())
    video = selectors.video_path(job=job)
    # Only once the row says so: a rolled-back change must find its video still there.
    transaction.on_commit(lambda: video.unlink(missing_ok=True))
    return True
