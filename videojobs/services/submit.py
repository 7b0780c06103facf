"""Admission of a job (the gates, idempotency, an upload's header checked now) and the
preparation of its input image (fetched or read from the stored upload, decoded, checked,
stored as PNG), until the job is claimable."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, JSONField, Q, Value
from django.db.models.expressions import CombinedExpression
from django.utils import timezone

from videojobs import params as P
from videojobs.errors import ErrorCode, IdempotencyConflict, ImageInputError, OwnerLimit, QueueFull, WebhooksDisabled
from videojobs.models import UNFINISHED_STATUSES, JobEventKind, JobPhase, JobStatus, VideoJob, WebhookEvent
from videojobs.net import webhooks as webhook_transport
from videojobs.net.images import normalize_image, probe_image
from videojobs.net.safe_http import FetchPolicy, fetch_image_bytes
from videojobs.net.addresses import parse_networks
from videojobs.services import handoff
from videojobs.services.events import end_jobs, record_event
from videojobs.services.loras import choose_loras


def _jsonb_merge(left: Any, right: Any) -> CombinedExpression:
    """left || right on jsonb: the keys of right added to (or replacing those of) left."""
    return CombinedExpression(left, "||", right, output_field=JSONField())


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

    The input is ``image_url`` or ``image_bytes`` (an upload): either way prepare_input decodes
    it later, out of the request, and the job is claimable once it has. An upload is checked
    now only as far as its size in bytes and its header go (format, pixels: no pixel is decoded)
    and stored as it came. ``note`` starts the detail of the job's "submitted" event (e.g. what
    it retries). Returns (job, created). Raises UnknownLora, ImageInputError for an unusable upload,
    WebhooksDisabled, IdempotencyConflict, OwnerLimit, QueueFull.
    """
    if (image_bytes is None) == (not image_url):
        raise ValueError("give exactly one of image_url and image_bytes")
    # 0. The LoRA adapters: the job's own, or DEFAULT_LORAS; each held by some worker (UnknownLora).
    params = {key: value for key, value in params.items() if key != "loras"} | (
        {"loras": loras} if (loras := choose_loras(requested=params.get("loras"))) else {})
    # 1. The webhook_url under the image fetcher's address rules; the upload's byte cap and
    #    header. Both before any lock is taken (a lookup takes time); neither decodes a picture,
    #    so a refused submit (OwnerLimit, QueueFull) costs no decoding.
    if webhook_url:
        if not settings.WEBHOOK_SECRET:
            raise WebhooksDisabled("webhooks are off on this server (WEBHOOK_SECRET is not set)")
        webhook_transport.check_url(webhook_url, policy=webhook_transport.policy_from_settings())
    upload = None if image_bytes is None else _checked_upload(image_bytes)
    # An upload's fingerprint is the sha256 of the bytes as sent (a retry sends the same bytes).
    source = image_url or f"upload:sha256:{upload.sha256}"
    fingerprint = request_fingerprint(prompt=prompt, image_url=source, negative_prompt=negative_prompt,
                                      params={**params, "webhook_url": webhook_url, "webhook_events": webhook_events})
    return _admit(prompt=prompt, params=params, image_url=image_url, upload=upload, negative_prompt=negative_prompt,
                  owner=owner, idempotency_key=idempotency_key, fingerprint=fingerprint, webhook_url=webhook_url,
                  webhook_events=list(webhook_events or [WebhookEvent.COMPLETED]) if webhook_url else [], note=note)


@dataclass(frozen=True)
class _Upload:
    data: bytes
    sha256: str  # of the bytes as sent


UPLOAD_NOT_AN_IMAGE = "the file is not a JPEG, PNG, WebP, GIF or BMP image (or it is corrupt)"
# A file whose header passed but whose pixels cannot be decoded: the job ends Failed with it.
UPLOAD_UNDECODABLE = "the uploaded file could not be decoded as an image (it is corrupt or truncated)"


def _checked_upload(data: bytes) -> _Upload:
    """An uploaded file under a fetched image's limits, as far as they can be checked without
    decoding it: its size in bytes first, then its header (an accepted format, at most
    IMAGE_MAX_PIXELS). Raises ImageInputError on the ``image`` field."""
    if len(data) > settings.IMAGE_MAX_BYTES:
        raise ImageInputError(f"the file is {len(data)} bytes; the limit is {settings.IMAGE_MAX_BYTES}",
                              ErrorCode.IMAGE_TOO_LARGE, field="image")
    try:
        probe_image(data, max_pixels=settings.IMAGE_MAX_PIXELS)
    except ImageInputError as exc:
        reason = UPLOAD_NOT_AN_IMAGE if exc.code == ErrorCode.IMAGE_NOT_AN_IMAGE else exc.reason
        raise ImageInputError(reason, exc.code, field="image") from None
    return _Upload(data=data, sha256=hashlib.sha256(data).hexdigest())


@transaction.atomic
def _admit(*, prompt: str, params: dict[str, Any], image_url: str, upload: _Upload | None, negative_prompt: str,
           owner: str, idempotency_key: str | None, fingerprint: str, webhook_url: str, webhook_events: list[str],
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
    # 4. Insert; an upload is stored as it came. Either input goes to django-q2 (prepare_input)
    #    once the row is committed.
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
    source = "upload" if upload is not None else image_url
    record_event(job=job, kind=JobEventKind.SUBMITTED, detail=f"{note} ({source})" if note else source)
    if upload is not None:
        _write(upload_path(job.request_id), upload.data)
    transaction.on_commit(lambda: handoff.enqueue_prepare_input(job.pk))
    return job, True


def upload_path(request_id: str) -> Path:
    """Where a job's upload waits, as sent, for prepare_input (relative to MEDIA_ROOT)."""
    return Path("inputs") / f"{request_id}.upload"


def store_input(*, request_id: str, data: bytes) -> Path:
    """Write a job's normalised input image under MEDIA_ROOT; returns its relative path."""
    relative = Path("inputs") / f"{request_id}.png"
    _write(relative, data)
    return relative


def _write(relative: Path, data: bytes) -> None:
    target = Path(settings.MEDIA_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def drop_upload(*, request_id: str) -> None:
    """Delete a job's stored upload (prepare_input is done with it, or the job is purged)."""
    (Path(settings.MEDIA_ROOT) / upload_path(request_id)).unlink(missing_ok=True)


def prepare_job_input(*, job_id: int) -> VideoJob | None:
    """Fetch (or read the stored upload), decode, check and store the job's image, then make the
    job claimable. The stored upload is deleted once this is done with it (ready, failed, or no
    longer needed).

    Network I/O and decoding happen outside any transaction; the state change is one guarded
    update. Returns the job, or None when it no longer needs an input (cancelled, already ready).
    """
    job = VideoJob.objects.filter(pk=job_id, status=JobStatus.IN_QUEUE, input_ready_at__isnull=True).first()
    if job is None:
        request_id = VideoJob.objects.filter(pk=job_id).values_list("request_id", flat=True).first()
        if request_id is not None:
            drop_upload(request_id=request_id)
        return None
    prepared = _prepare(job)
    # Ready, failed or cancelled meanwhile: the upload is not needed again. (An unexpected error
    # keeps it, for requeue_stale_inputs to try again.)
    if not job.image_url:
        drop_upload(request_id=job.request_id)
    return prepared


def _prepare(job: VideoJob) -> VideoJob | None:
    # 1. Download or read, and decode; a user-facing reason on any failure.
    try:
        image = normalize_image(_input_bytes(job), max_pixels=settings.IMAGE_MAX_PIXELS)
    except ImageInputError as exc:
        reason = exc.reason
        if not job.image_url and exc.code == ErrorCode.IMAGE_NOT_AN_IMAGE:
            reason = UPLOAD_UNDECODABLE
        fail_input(job_id=job.pk, code=exc.code, reason=reason)
        return VideoJob.objects.get(pk=job.pk)
    except FileNotFoundError:
        fail_input(job_id=job.pk, code=ErrorCode.INPUT_MISSING,
                   reason="the uploaded image is no longer stored on the server; submit the job again")
        return VideoJob.objects.get(pk=job.pk)
    # 2. The video's size, now that the image's is known (aspect "auto" keeps its ratio).
    try:
        width, height = P.output_size(image_size=job.params["image_size"],
                                      aspect=job.params.get("aspect", P.ASPECT_DEFAULT),
                                      image_width=image.width, image_height=image.height)
    except ValueError as exc:
        fail_input(job_id=job.pk, code=ErrorCode.VALIDATION_ERROR, reason=f"aspect: {exc}")
        return VideoJob.objects.get(pk=job.pk)
    # 3. Store the normalised copy under a name that is unique per job.
    relative = store_input(request_id=job.request_id, data=image.data)
    # 4. Make it claimable, or drop the file when the job was cancelled meanwhile.
    if not mark_input_ready(job_id=job.pk, image_path=str(relative), sha256=image.sha256,
                            output_size=P.format_size(width, height)):
        (Path(settings.MEDIA_ROOT) / relative).unlink(missing_ok=True)
        return None
    return VideoJob.objects.get(pk=job.pk)


def _input_bytes(job: VideoJob) -> bytes:
    """The job's image as fetched from its image_url, or as uploaded. Raises ImageInputError
    (the fetch) or FileNotFoundError (an upload that is gone)."""
    if not job.image_url:
        return (Path(settings.MEDIA_ROOT) / upload_path(job.request_id)).read_bytes()
    policy = FetchPolicy(
        max_bytes=settings.IMAGE_MAX_BYTES,
        connect_timeout=settings.IMAGE_CONNECT_TIMEOUT,
        total_timeout=settings.IMAGE_TOTAL_TIMEOUT,
        allowed_networks=parse_networks(",".join(settings.IMAGE_URL_ALLOWED_NETWORKS)),
    )
    return fetch_image_bytes(job.image_url, policy=policy)


@transaction.atomic
def mark_input_ready(*, job_id: int, image_path: str, sha256: str, output_size: str | None = None) -> bool:
    """The job's input is stored: it becomes claimable. ``output_size`` ("W*H", the video's size
    from the image's, see params.output_size) goes into its params for the status document."""
    now = timezone.now()
    sized = {"params": _jsonb_merge(F("params"), Value({"output_size": output_size}, JSONField()))} if output_size else {}
    updated = VideoJob.objects.filter(pk=job_id, status=JobStatus.IN_QUEUE, input_ready_at__isnull=True).update(
        **sized,
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
def adopt_checked_input(*, job: VideoJob, data: bytes, sha256: str) -> None:
    """A new job (a retry, a remix) reuses another job's input image, already checked and
    normalised: stored under the new job's name and marked ready, so its prepare_input task finds
    nothing to do; the copy submit_job kept as an upload is not needed."""
    relative = store_input(request_id=job.request_id, data=data)
    mark_input_ready(job_id=job.pk, image_path=str(relative), sha256=sha256)
    drop_upload(request_id=job.request_id)


@transaction.atomic
def fail_input(*, job_id: int, code: str, reason: str) -> bool:
    jobs = VideoJob.objects.filter(pk=job_id, status=JobStatus.IN_QUEUE)
    return bool(end_jobs(jobs, status=JobStatus.FAILED, now=timezone.now(), reason=reason, error_code=code))
