"""What the service keeps: the history purge (which first carries what /metrics counted of
the deleted jobs into MetricTotal) and the disk quota of OUTPUT_DIR."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from videojobs import selectors
from videojobs.models import FINISHED_STATUSES, UNFINISHED_STATUSES, MetricTotal, VideoJob
from videojobs.previews import remove_previews
from videojobs.services.submit import drop_upload


@transaction.atomic
def purge_finished_jobs(*, older_than_days: int) -> int:
    """History sweep: delete finished jobs older than the retention period (files too)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = VideoJob.objects.filter(status__in=FINISHED_STATUSES, finished_at__lt=cutoff)
    _carry_metric_totals(jobs=old)
    for job in old.only("request_id", "input_image", "result"):
        _delete_job_files(job)
    _, per_model = old.delete()  # events and deliveries go with their jobs
    return per_model.get(VideoJob._meta.label, 0)


def _carry_metric_totals(*, jobs) -> None:
    """Before ``jobs`` are deleted: add what /metrics counts of them to MetricTotal, so that its
    histograms and counters keep counting them (a counter that went down would read as a reset)."""
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
    drop_upload(request_id=job.request_id)  # an upload whose prepare_input never ran
    video = (job.result or {}).get("video_file")
    if video:
        (Path(settings.OUTPUT_DIR) / video).unlink(missing_ok=True)
        remove_previews(Path(settings.OUTPUT_DIR) / video)


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
        remove_previews(path)
        total -= size
        removed += 1
        stored = VideoJob.objects.filter(request_id=path.stem).values_list("result", flat=True).first()
        VideoJob.objects.filter(request_id=path.stem).update(
            result=expired_result(stored or {}, reason=EXPIRED_REASON), updated_at=timezone.now()
        )
    return removed


EXPIRED_REASON = "the video was deleted to keep OUTPUT_DIR within MAX_OUTPUT_DIR_SIZE; submit the job again"


def expired_result(result: dict[str, Any], *, reason: str) -> dict[str, Any]:
    """A job's result once its video is deleted: what ran is kept, the video is marked gone."""
    return {**result, "expired": True, "expired_at": timezone.now().timestamp(), "expired_reason": reason}
