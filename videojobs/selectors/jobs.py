"""A job as the API, the job page, the admin and the webhooks read it: the job itself, its
status document, the lists, its place in the queue, its video, and its summaries."""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from videojobs.models import UNFINISHED_STATUSES, JobPhase, JobStatus, VideoJob
from videojobs.params import ASPECT_DEFAULT

REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# The OpenAI-compatible API's form of a job's id ("video_" + requestId); every lookup takes both.
VIDEO_ID_PREFIX = "video_"

# How much of the progress bar each phase covers: the denoising steps dominate the time.
_PHASE_SPAN = {
    JobPhase.ENCODING: (0.0, 0.05),
    JobPhase.DENOISING: (0.05, 0.90),
    JobPhase.DECODING: (0.90, 0.97),
    JobPhase.SAVING: (0.97, 1.0),
}


def is_request_id(value: object) -> bool:
    """Whether a client's requestId has the shape of one (32 lower-case hex characters).

    Every lookup of a job by a client's id goes through here (jobs_by_request_id, and the raw
    SQL of get_job_for_status): a malformed id, a NUL byte (which Postgres refuses in text)
    included, is an unknown job, never a query."""
    return isinstance(value, str) and REQUEST_ID_RE.fullmatch(value) is not None


def bare_request_id(value: object) -> object:
    """A client's id as the requestId it names: ``video_<requestId>`` (the /v1 API's form) loses
    its prefix; anything else is returned as it is (is_request_id then judges it)."""
    if isinstance(value, str) and value.startswith(VIDEO_ID_PREFIX):
        return value[len(VIDEO_ID_PREFIX):]
    return value


def jobs_by_request_id(*, request_id: object, owner: str | None = None):
    """The job with this client's id (a requestId or its /v1 form ``video_<requestId>``), as a
    queryset (empty for a malformed id, and for a job deleted through DELETE /v1/videos), of
    ``owner`` (None: anyone, for the admin). The API, the job page and services.request_cancel
    read through it."""
    request_id = bare_request_id(request_id)
    if not is_request_id(request_id):
        return VideoJob.objects.none()
    jobs = VideoJob.objects.filter(request_id=request_id, deleted_at__isnull=True)
    return jobs if owner is None else jobs.filter(owner=owner)


def get_job(*, request_id: str, owner: str | None = None) -> VideoJob:
    """The job, if ``owner`` (None: anyone, for the admin) owns it. Raises VideoJob.DoesNotExist
    for an unknown or malformed id, and for another owner's job (it must look unknown to them)."""
    return jobs_by_request_id(request_id=request_id, owner=owner).get()


def get_job_for_status(*, request_id: str, owner: str | None = None) -> VideoJob:
    """get_job for the status poll, the API's most frequent request: the job and its place in
    the queue in one round trip (``job.queue_ahead``), as raw SQL because the ORM's compilation
    of the two queries cost more than Postgres answering them (bench/api_load.py). A deleted job
    is unknown here too."""
    request_id = bare_request_id(request_id)
    if not is_request_id(request_id):
        raise VideoJob.DoesNotExist(request_id)
    table, fields = VideoJob._meta.db_table, VideoJob._meta.concrete_fields
    columns = ", ".join(f'job."{field.column}"' for field in fields)
    sql = (
        f"SELECT {columns}, CASE WHEN job.status = %s THEN (SELECT count(*) FROM {table} ahead"
        f" WHERE ahead.status = %s AND ahead.created_at < job.created_at) END AS queue_ahead"
        f" FROM {table} job WHERE job.request_id = %s AND job.deleted_at IS NULL"
    )
    params: list[Any] = [JobStatus.IN_QUEUE, JobStatus.IN_QUEUE, request_id]
    if owner is not None:
        sql += " AND job.owner = %s"
        params.append(owner)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise VideoJob.DoesNotExist(request_id)
    # from_db applies no converters: decode the JSON columns as the ORM would.
    values = [field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
              for field, value in zip(fields, row)]
    job = VideoJob.from_db(connection.alias, [field.attname for field in fields], values)
    job.queue_ahead = row[len(fields)]
    return job


def unfinished_count() -> int:
    return VideoJob.objects.filter(status__in=UNFINISHED_STATUSES).count()


def queue_position(*, job: VideoJob) -> int | None:
    """1 for the next job a worker will claim; None once the job left the queue."""
    if job.status != JobStatus.IN_QUEUE:
        return None
    ahead = getattr(job, "queue_ahead", None)  # read with the job by get_job_for_status
    if ahead is None:
        ahead = VideoJob.objects.filter(status=JobStatus.IN_QUEUE, created_at__lt=job.created_at).count()
    return ahead + 1


def job_progress(*, job: VideoJob) -> float:
    if job.status == JobStatus.SUCCEED:
        return 1.0
    if job.status != JobStatus.IN_PROGRESS and job.status != JobStatus.FAILED and job.status != JobStatus.CANCELLED:
        return 0.0
    span = _PHASE_SPAN.get(job.phase)
    if span is None:
        return 0.0
    low, high = span
    if job.phase == JobPhase.DENOISING and job.progress_total:
        return round(low + (high - low) * job.progress_step / job.progress_total, 4)
    return low


def eta_seconds(*, job: VideoJob) -> float | None:
    """Remaining time from the pace so far; None until a denoising step has finished."""
    if job.status != JobStatus.IN_PROGRESS or not job.started_at or not job.progress_step or not job.progress_total:
        return None
    elapsed = (timezone.now() - job.started_at).total_seconds()
    fraction = job_progress(job=job)
    if fraction <= 0:
        return None
    return round(max(elapsed / fraction - elapsed, 0.0), 1)


def acceleration_summary(*, result: dict[str, Any] | None) -> str:
    """One line for the admin: the cache that ran, what it reused, the attention backend, the DiT passes."""
    acceleration = (result or {}).get("acceleration")
    if not acceleration:
        return "-"
    cache = acceleration.get("cache") or {}
    method = cache.get("method", "none")
    parts = [f"cache {method}"]
    if method == "attention":
        parts.append(f"{cache.get('reused_steps_per_pass', 0)} steps/pass reused "
                     f"({', '.join(f'{p} {n}' for p, n in sorted((cache.get('reused') or {}).items())) or 'none'} attention outputs)")
    elif method == "dbcache":
        reused = ", ".join(f"{p} {n}" for p, n in sorted((cache.get("cached_steps") or {}).items())) or "none"
        skipped = ", ".join(f"{p} {n}" for p, n in sorted((cache.get("skipped_blocks") or {}).items())) or "none"
        parts.append(f"steps reused per pass: {reused} (blocks skipped: {skipped})")
    parts.append(f"attention {acceleration.get('attention_backend', '?')}")
    parts.append(f"prompt cache hits {acceleration.get('prompt_cache_hits', 0)}")
    if "dit_forwards" in result:  # jobs that ran before it was counted have none
        parts.append(f"DiT passes {result['dit_forwards']}")
    return "; ".join(parts)


def _epoch(value) -> float | None:
    return round(value.timestamp(), 3) if value else None


def expired_video_reason(*, job: VideoJob) -> str | None:
    """Why a finished job's video is gone (the disk quota or an operator deleted it), or None."""
    result = job.result or {}
    return result.get("expired_reason") if result.get("expired") else None


def has_video(*, job: VideoJob) -> bool:
    """The job succeeded and its video was not deleted since (quota sweep, an operator)."""
    return job.status == JobStatus.SUCCEED and not (job.result or {}).get("expired")


def video_name(*, job: VideoJob) -> str:
    """A job's video relative to OUTPUT_DIR: the one form a client is told (``results.video_path``
    of the status document and the webhooks), never the server's path. Rows from before issue 20
    also kept the daemon's path, absolute when OUTPUT_DIR was outside the project: it is not read."""
    return PurePosixPath((job.result or {}).get("video_file") or f"{job.request_id}.mp4").name


def video_path(*, job: VideoJob) -> Path:
    """Where a succeeded job's video is (or was) stored."""
    return Path(settings.OUTPUT_DIR) / video_name(job=job)


def video_url_for(*, request_id: str) -> str:
    return f"/videos/{request_id}.mp4"


def video_size(*, job: VideoJob) -> str | None:
    """The video's size, "W*H": the one that ran once it succeeded; before, the one the input
    image gave (aspect "auto"), or image_size itself under "crop"; None while "auto" waits for
    its image."""
    ran = (job.result or {}).get("resolution")
    if ran:
        return ran
    known = job.params.get("output_size")
    if known:
        return known
    return job.params.get("image_size") if job.params.get("aspect", ASPECT_DEFAULT) == "crop" else None


def status_document(*, job: VideoJob) -> dict[str, Any]:
    """The /video/status body: the original fields first, then our extra detail."""
    results = None
    if job.status == JobStatus.SUCCEED and job.result:
        results = {k: v for k, v in job.result.items() if k not in ("video_file", "video_path")}
        if not job.result.get("expired"):
            # Nothing left to download once expired: no URL or path that would only answer 410.
            results = {"video_url": video_url_for(request_id=job.request_id), "video_path": video_name(job=job),
                       **results}
    elif job.result:
        # A stopped or failed job still reports what actually ran (topology, warnings).
        results = {k: v for k, v in job.result.items() if k in ("topology", "warnings", "seed")} or None
    if results is not None and job.timings:
        results["timings"] = job.timings
    return {
        "requestId": job.request_id,
        "status": job.status,
        "reason": job.reason or None,
        "error_code": job.error_code or None,
        "results": results,
        "queue_position": queue_position(job=job),
        "progress": job_progress(job=job),
        "phase": job.phase,
        "step": job.progress_step,
        "total_steps": job.progress_total,
        "eta_seconds": eta_seconds(job=job),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested_at is not None,
        "parameters": job.params,
        "size": video_size(job=job),
        "loras": job.params.get("loras", []),
        "created_at": _epoch(job.created_at),
        "updated_at": _epoch(job.updated_at),
        "started_at": _epoch(job.started_at),
        "finished_at": _epoch(job.finished_at),
    }


def webhook_document(*, job: VideoJob) -> dict[str, Any]:
    """A webhook's body: the status document, its video_url absolute when PUBLIC_BASE_URL is set."""
    document = status_document(job=job)
    results = document.get("results") or {}
    if settings.PUBLIC_BASE_URL and results.get("video_url", "").startswith("/"):
        results["video_url"] = settings.PUBLIC_BASE_URL + results["video_url"]
    return document


def list_jobs(*, owner: str, status: str | None = None):
    """The caller's jobs, newest first (the API's /video/jobs, the job page's list); deleted
    ones (DELETE /v1/videos) are left out."""
    jobs = VideoJob.objects.filter(owner=owner, deleted_at__isnull=True)
    if status:
        jobs = jobs.filter(status=status)
    return jobs.order_by("-created_at", "-id")


def job_summary(*, job: VideoJob) -> dict[str, Any]:
    """One row of /video/jobs: enough to list and pick a job, without its queue place."""
    finished_video = has_video(job=job)
    return {
        "requestId": job.request_id,
        "status": job.status,
        "phase": job.phase,
        "progress": job_progress(job=job),
        "step": job.progress_step,
        "total_steps": job.progress_total,
        "prompt": job.prompt,
        "image_size": job.params.get("image_size"),
        "num_frames": job.params.get("num_frames"),
        "error_code": job.error_code or None,
        "reason": job.reason or None,
        "video_url": video_url_for(request_id=job.request_id) if finished_video else None,
        "created_at": _epoch(job.created_at),
        "finished_at": _epoch(job.finished_at),
    }
