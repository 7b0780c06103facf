"""Jobs as the OpenAI-compatible API (/v1) reads them: the Video object the openai SDK parses,
the cursor-paged list, the served model, and the file a content variant is served from."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

from videojobs.errors import ErrorCode
from videojobs.models import FINISHED_STATUSES, JobStatus, VideoJob
from videojobs.selectors.jobs import VIDEO_ID_PREFIX, bare_request_id, eta_seconds, is_request_id, job_progress

# Wan2.1 generates at 16 frames per second (the daemon writes its mp4s at VIDEO_FPS).
MODEL_FPS = settings.VIDEO_FPS

_STATUS = {
    JobStatus.IN_QUEUE: "queued",
    JobStatus.IN_PROGRESS: "in_progress",
    JobStatus.SUCCEED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "failed",
}


def video_id(request_id: str) -> str:
    """A job's id in the /v1 API: ``video_<requestId>`` (both APIs accept both forms)."""
    return f"{VIDEO_ID_PREFIX}{request_id}"


def seconds_text(frames: int) -> str:
    """A clip's length at 16 fps as the API's string: 65 frames -> "4.06", 33 -> "2.06"."""
    return f"{frames / MODEL_FPS:.2f}".rstrip("0").rstrip(".")


def size_text(image_size: str) -> str:
    """The original API's "1280*720" as OpenAI's "1280x720"."""
    return image_size.replace("*", "x")


def _unix(value) -> int | None:
    return int(value.timestamp()) if value else None


def expires_at(*, job: VideoJob) -> int | None:
    """When the job's downloads go: its expiry if the disk quota or an operator already deleted
    the video, else the history purge (finished_at + JOB_HISTORY_DAYS). None while unfinished."""
    result = job.result or {}
    if result.get("expired"):
        return int(result.get("expired_at") or 0) or _unix(job.finished_at)
    if job.status not in FINISHED_STATUSES or job.finished_at is None:
        return None
    return _unix(job.finished_at + timedelta(days=settings.JOB_HISTORY_DAYS))


def video_error(*, job: VideoJob) -> dict[str, str] | None:
    """A failed job's {code, message}; a cancelled one's code is "cancelled"."""
    if job.status == JobStatus.CANCELLED:
        return {"code": str(ErrorCode.CANCELLED).lower(), "message": job.reason or "cancelled by request"}
    if job.status == JobStatus.FAILED:
        return {"code": str(job.error_code or ErrorCode.INFERENCE_ERROR).lower(), "message": job.reason or "failed"}
    return None


def video_object(*, job: VideoJob) -> dict[str, Any]:
    """The Video object as openai.types.Video parses it."""
    frames = (job.result or {}).get("frames") or job.params.get("num_frames") or 0
    return {
        "id": video_id(job.request_id),
        "object": "video",
        "status": _STATUS[job.status],
        "progress": int(job_progress(job=job) * 100),
        "created_at": _unix(job.created_at),
        "completed_at": _unix(job.finished_at) if job.status == JobStatus.SUCCEED else None,
        "expires_at": expires_at(job=job),
        "model": settings.OPENAI_MODEL_ID,
        "prompt": job.prompt,
        "seconds": seconds_text(int(frames)),
        "size": size_text(job.params.get("image_size", "")),
        "error": video_error(job=job),
        "remixed_from_video_id": video_id(job.remixed_from) if job.remixed_from else None,
    }


# How soon the SDK's poll (create_and_poll) should ask again: a queued job waits for a whole job
# ahead of it; a running one is asked about 20 times over its remaining time, 1-10 s apart.
POLL_QUEUED_MS, POLL_MIN_MS, POLL_MAX_MS = 5000, 1000, 10000


def poll_after_ms(*, job: VideoJob) -> int | None:
    """The ``openai-poll-after-ms`` hint for an unfinished job (None once it ended)."""
    if job.status == JobStatus.IN_QUEUE:
        return POLL_QUEUED_MS
    if job.status != JobStatus.IN_PROGRESS:
        return None
    eta = eta_seconds(job=job)
    return POLL_MIN_MS if eta is None else int(min(max(eta * 1000 / 20, POLL_MIN_MS), POLL_MAX_MS))


def video_page(*, owner: str, limit: int, order: str, after: VideoJob | None) -> dict[str, Any]:
    """One page of the caller's videos (deleted ones left out), by creation time, ``after`` the
    cursor job (exclusive): {object: "list", data, first_id, last_id, has_more}."""
    jobs = VideoJob.objects.filter(owner=owner, deleted_at__isnull=True)
    if after is not None:
        key = (after.created_at, after.pk)
        if order == "asc":
            jobs = jobs.filter(created_at__gte=key[0]).exclude(created_at=key[0], pk__lte=key[1])
        else:
            jobs = jobs.filter(created_at__lte=key[0]).exclude(created_at=key[0], pk__gte=key[1])
    ordering = ("created_at", "id") if order == "asc" else ("-created_at", "-id")
    rows = list(jobs.order_by(*ordering)[: limit + 1])
    data = [video_object(job=job) for job in rows[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(rows) > limit,
    }


def cursor_job(*, video: str, owner: str) -> VideoJob | None:
    """The job an ``after`` cursor names (either id form), if it is this owner's. A video deleted
    since its page was read still marks its place (a client may delete what it pages through)."""
    request_id = bare_request_id(video)
    if not is_request_id(request_id):
        return None
    return VideoJob.objects.filter(request_id=request_id, owner=owner).first()


def served_models() -> list[dict[str, Any]]:
    """GET /v1/models: the model this service serves (one per deployment)."""
    return [{"id": settings.OPENAI_MODEL_ID, "object": "model", "created": 0, "owned_by": "wan-ai"}]
