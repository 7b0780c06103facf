"""The periodic sweeps over running jobs: expired leases, silent workers, TASK_TIMEOUT, and
inputs whose task was lost. A rescued job goes back to the queue, or ends once its attempts are
spent (a poison job ends), or ends cancelled when its cancel was asked."""
from __future__ import annotations

import logging
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from videojobs.errors import ErrorCode
from videojobs.models import InferenceWorker, JobEventKind, JobStatus, VideoJob, WorkerState
from videojobs.services import handoff
from videojobs.services.events import CANCELLED_REASON, back_in_queue, end_jobs, record_event

logger = logging.getLogger(__name__)


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
    report = rescue_jobs(expired, now)
    if expired:
        logger.warning("lease rescue: %d requeued, %d failed, %d cancelled", *astuple(report))
    return report


def rescue_jobs(jobs: list[VideoJob], now: datetime) -> RescueReport:
    """Running jobs whose worker is gone: cancelled if asked, failed once their attempts are spent,
    else back in the queue (the attempt their worker took stays counted)."""
    requeued = failed = cancelled = 0
    for job in jobs:
        guarded = VideoJob.objects.filter(pk=job.pk, status=JobStatus.IN_PROGRESS, attempt=job.attempt)
        if job.cancel_requested_at is not None:
            cancelled += end_jobs(guarded, status=JobStatus.CANCELLED, now=now, reason=CANCELLED_REASON)
        elif job.attempt >= job.max_attempts:
            failed += end_jobs(guarded, status=JobStatus.FAILED, now=now, error_code=ErrorCode.WORKER_LOST,
                               reason=f"the inference worker stopped responding on each of {job.attempt} attempts")
        elif guarded.update(**back_in_queue(now)):
            requeued += 1
            record_event(job=VideoJob.objects.get(pk=job.pk), kind=JobEventKind.REQUEUED,
                         detail=f"worker {job.worker} stopped responding during attempt {job.attempt}")
    if requeued:
        handoff.notify_ready("rescued")
    return RescueReport(requeued=requeued, failed=failed, cancelled=cancelled)


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
    report = rescue_jobs(orphans, now)
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
                    status=JobStatus.FAILED, now=now, error_code=ErrorCode.TIMEOUT,
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
        handoff.enqueue_prepare_input(job_id)
    return len(stale)


@transaction.atomic
def fail_jobs_without_lora_holder(*, now: datetime | None = None) -> int:
    """Sweep: ready jobs waiting longer than LORA_WAIT_SECONDS for LoRA adapters that no worker
    holds (every adapter of a job on one worker: a job runs on one daemon group) fail with
    LORA_UNAVAILABLE. Judged only while some worker has loaded (idle or busy): with none up, a job
    waits as every job does. A loading worker's row still lists what it held before its restart,
    and counts as a holder."""
    now = now or timezone.now()
    workers = dict(InferenceWorker.objects.filter(
        state__in=[WorkerState.LOADING, WorkerState.IDLE, WorkerState.BUSY]).values_list("name", "state"))
    if not any(state != WorkerState.LOADING for state in workers.values()):
        return 0
    holders = [{entry["name"] for entry in held or []}
               for held in InferenceWorker.objects.filter(name__in=workers).values_list("loras", flat=True)]
    cutoff = now - timedelta(seconds=settings.LORA_WAIT_SECONDS)
    waiting = VideoJob.objects.select_for_update(skip_locked=True).filter(
        status=JobStatus.IN_QUEUE, input_ready_at__lt=cutoff, params__loras__0__name__isnull=False)
    failed = 0
    for job in waiting:
        wanted = {str(item["name"]) for item in job.params["loras"]}
        if any(wanted <= held for held in holders):
            continue
        held_now = sorted(set().union(*holders)) or ["none"]
        failed += end_jobs(VideoJob.objects.filter(pk=job.pk, status=JobStatus.IN_QUEUE), status=JobStatus.FAILED,
                           now=now, error_code=ErrorCode.LORA_UNAVAILABLE,
                           reason=f"no inference worker holds the LoRA adapters {', '.join(sorted(wanted))} together "
                                  f"(held now: {', '.join(held_now)}); the job waited {settings.LORA_WAIT_SECONDS} s")
    if failed:
        logger.warning("%d queued jobs failed: no worker holds their LoRA adapters", failed)
    return failed
