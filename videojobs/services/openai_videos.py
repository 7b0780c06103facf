"""The two writes only the OpenAI-compatible API (/v1/videos) makes: delete a video job (cancel
it, remove its files, hide it from every read) and remix one (a new job with the same image and
parameters and a new prompt). Both go through the services every other caller uses:
request_cancel (which ends a queued job through end_jobs) and submit_job (the same gates)."""
from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from videojobs import selectors
from videojobs.errors import InputGone, JobNotFound
from videojobs.models import UNFINISHED_STATUSES, VideoJob
from videojobs.previews import remove_previews
from videojobs.services.cancel import request_cancel
from videojobs.services.submit import adopt_checked_input, drop_upload, submit_job, upload_path

event_log = logging.getLogger("videojobs.events")


@transaction.atomic
def delete_job(*, request_id: str, owner: str) -> VideoJob:
    """DELETE /v1/videos/{id}: cancel the job if it is queued or running (request_cancel: a
    queued job ends Cancelled now, a running one stops at its next step), remove its files (the
    video, its previews, the input image) once this commits, and set deleted_at, after which
    every read of both APIs and the job page answers 404. The row stays: /metrics and the admin
    keep counting it. Raises JobNotFound for an unknown, another owner's or a deleted job."""
    job = selectors.jobs_by_request_id(request_id=request_id, owner=owner).select_for_update().first()
    if job is None:
        raise JobNotFound(request_id)
    # 1. Stop it: the same cancel as /video/cancel.
    if job.status in UNFINISHED_STATUSES:
        request_cancel(request_id=job.request_id, owner=owner)
    # 2. Hide it (guarded: a concurrent delete finds it gone and does nothing more).
    now = timezone.now()
    if not VideoJob.objects.filter(pk=job.pk, deleted_at__isnull=True).update(deleted_at=now, updated_at=now):
        raise JobNotFound(request_id)
    event_log.info("job %s deleted", job.request_id, extra={"event": "deleted", "request_id": job.request_id,
                                                            "owner": owner, "status": job.status})
    # 3. Its files, once the row says so (a rolled-back delete keeps them).
    files = _job_files(job)
    transaction.on_commit(lambda: _remove(files, job.request_id))
    job.refresh_from_db()
    return job


def _job_files(job: VideoJob) -> list[Path]:
    files = [selectors.video_path(job=job)]
    if job.input_image:
        files.append(Path(settings.MEDIA_ROOT) / job.input_image)
    return files


def _remove(files: list[Path], request_id: str) -> None:
    for path in files:
        path.unlink(missing_ok=True)
    remove_previews(files[0])
    drop_upload(request_id=request_id)


@transaction.atomic
def remix_job(*, request_id: str, owner: str, prompt: str) -> VideoJob:
    """POST /v1/videos/{id}/remix: a new job of ``owner`` with the source job's input image,
    negative prompt, parameters and webhook, a new ``prompt``, and remixed_from set. The seed
    the source actually ran with is kept when it chose one at random, so that the remix differs
    by its prompt only. Admitted by submit_job (the owner's gates and the queue limit apply).

    The source's stored image (checked and normalised already) is copied under the new job's
    name and marked ready at once; a source still waiting for its input passes on its upload or
    image_url. Raises JobNotFound, InputGone, and what submit_job raises."""
    source = selectors.jobs_by_request_id(request_id=request_id, owner=owner).first()
    if source is None:
        raise JobNotFound(request_id)
    # 1. The source's parameters, with the seed it ran with.
    params = dict(source.params)
    ran_seed = (source.result or {}).get("seed")
    if params.get("seed") is None and ran_seed is not None:
        params["seed"] = ran_seed
    # 2. Its image: stored and ready, or the upload/URL it is still waiting for.
    ready = _read(Path(settings.MEDIA_ROOT) / source.input_image) if source.input_image else None
    upload = None if ready is not None or source.image_url else _read(Path(settings.MEDIA_ROOT) / upload_path(source.request_id))
    if ready is None and upload is None and not source.image_url:
        raise InputGone(f"the input image of video {source.request_id} is no longer stored; create a new video")
    # 3. Admit it like any submit, then mark it a remix.
    job, _ = submit_job(
        prompt=prompt, params=params, image_url=source.image_url,
        image_bytes=None if source.image_url else (ready if ready is not None else upload),
        negative_prompt=source.negative_prompt, owner=owner, webhook_url=source.webhook_url,
        webhook_events=list(source.webhook_events) or None, note=f"remix of {source.request_id}",
    )
    VideoJob.objects.filter(pk=job.pk).update(remixed_from=source.request_id)
    if ready is not None:
        adopt_checked_input(job=job, data=ready, sha256=source.input_sha256)
    job.refresh_from_db()
    return job


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None
