"""Admission of a job (the gates, idempotency, an upload checked now) and the preparation of
its input image (fetched, checked, stored), until the job is claimable."""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from videojobs.errors import ErrorCode, IdempotencyConflict, ImageInputError, OwnerLimit, QueueFull, WebhooksDisabled
from videojobs.models import UNFINISHED_STATUSES, JobEventKind, JobPhase, JobStatus, VideoJob, WebhookEvent
from videojobs.net import webhooks as webhook_transport
from videojobs.net.images import normalize_image
from videojobs.net.safe_http import FetchPolicy, fetch_image_bytes
from videojobs.net.addresses import parse_networks
from videojobs.services import handoff
from videojobs.services.events import end_jobs, record_event


# pg_advisory_xact_lock key serialising the admission gate (count + insert).
_ADMISSION_LOCK_KEY = 0x56494430  # "VID0"


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
        raise QueueFull(counts["everyone"], settings.MAX_CONCURRENT_TASKS, retry_after=settings.RETRY_AFTER_SECONDS)


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
        if not settings.WEBHOOK_SECRET:
            raise WebhooksDisabled("webhooks are off on this server (WEBHOOK_SECRET is not set)")
        webhook_transport.check_url(webhook_url, policy=webhook_transport.policy_from_settings())
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
    if len(data) > settings.IMAGE_MAX_BYTES:
        raise ImageInputError(f"the file is {len(data)} bytes; the limit is {settings.IMAGE_MAX_BYTES}",
                              ErrorCode.IMAGE_TOO_LARGE, field="image")
    try:
        return normalize_image(data, max_pixels=settings.IMAGE_MAX_PIXELS)
    except ImageInputError as exc:
        reason = exc.reason
        if exc.code == ErrorCode.IMAGE_NOT_AN_IMAGE:
            reason = "the file is not a JPEG, PNG, WebP, GIF or BMP image (or it is corrupt)"
        raise ImageInputError(reason, exc.code, field="image") from None


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
        transaction.on_commit(lambda: handoff.enqueue_prepare_input(job.pk))
    else:
        relative = store_input(request_id=job.request_id, data=image.data)
        mark_input_ready(job_id=job.pk, image_path=str(relative), sha256=image.sha256)
        job.refresh_from_db()
    return job, True


def store_input(*, request_id: str, data: bytes) -> Path:
    """Write a job's normalised input image under MEDIA_ROOT; returns its relative path."""
    relative = Path("inputs") / f"{request_id}.png"
    target = Path(settings.MEDIA_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".png.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return relative


def prepare_job_input(*, job_id: int) -> VideoJob | None:
    """Fetch, check and store the job's image, then make the job claimable.

    Network I/O happens outside any transaction; the state change is one guarded update.
    Returns the job, or None when it no longer needs an input (cancelled, already ready).
    """
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
    relative = store_input(request_id=job.request_id, data=image.data)
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
        handoff.notify_ready(str(job_id))
    return bool(updated)


@transaction.atomic
def fail_input(*, job_id: int, code: str, reason: str) -> bool:
    jobs = VideoJob.objects.filter(pk=job_id, status=JobStatus.IN_QUEUE)
    return bool(end_jobs(jobs, status=JobStatus.FAILED, now=timezone.now(), reason=reason, error_code=code))
