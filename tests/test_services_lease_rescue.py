"""rescue_expired_leases and the other sweeps."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.conftest import make_job, make_ready_job, png_bytes
from videojobs import services
from videojobs.models import JobStatus, VideoJob

pytestmark = pytest.mark.django_db


def expire(job):
    VideoJob.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))


def test_expired_lease_puts_the_job_back_in_the_queue():
    make_ready_job()
    job = services.claim_next_job(worker="w1")
    expire(job)
    report = services.rescue_expired_leases()
    assert report.requeued == 1
    job.refresh_from_db()
    assert job.status == JobStatus.IN_QUEUE and job.worker == "" and job.lease_until is None
    assert services.claim_next_job(worker="w2").pk == job.pk


def test_live_lease_is_left_alone():
    make_ready_job()
    services.claim_next_job(worker="w1", lease_seconds=300)
    assert services.rescue_expired_leases() == services.RescueReport(0, 0, 0)


def test_poison_job_fails_once_attempts_are_spent(settings):
    settings.JOB_MAX_ATTEMPTS = 3
    make_ready_job()
    for attempt in range(1, 4):
        job = services.claim_next_job(worker="w1")
        assert job.attempt == attempt
        expire(job)
        services.rescue_expired_leases()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error_code == "WORKER_LOST"
    assert "3 attempts" in job.reason
    assert services.claim_next_job(worker="w1") is None


def test_rescued_job_with_cancel_requested_ends_cancelled():
    make_ready_job()
    job = services.claim_next_job(worker="w1")
    services.request_cancel(request_id=job.request_id)
    expire(job)
    assert services.rescue_expired_leases().cancelled == 1
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_timeout_sweep_fails_jobs_running_past_task_timeout(settings):
    settings.TASK_TIMEOUT = 10
    make_ready_job()
    job = services.claim_next_job(worker="w1")
    assert services.fail_timed_out_jobs(grace_seconds=5) == 0
    VideoJob.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=20))
    assert services.fail_timed_out_jobs(grace_seconds=5) == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_code == "TIMEOUT"


def test_stale_input_is_enqueued_again(monkeypatch):
    enqueued = []
    monkeypatch.setattr(services.handoff, "enqueue_prepare_input", enqueued.append)
    job = make_job()
    VideoJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert services.requeue_stale_inputs(older_than_seconds=600) == 1
    assert enqueued == [job.pk]
    assert services.requeue_stale_inputs(older_than_seconds=600) == 0


def test_output_quota_deletes_oldest_finished_videos_first(settings):
    import os

    settings.OUTPUT_DIR.mkdir(parents=True)
    names = []
    for i in range(3):
        job = make_job()
        path = settings.OUTPUT_DIR / f"{job.request_id}.mp4"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + i, 1000 + i))
        services.fail_input(job_id=job.pk, code="X", reason="done")
        names.append(job.request_id)
    assert services.enforce_output_quota(max_bytes=2000) == 1
    assert not (settings.OUTPUT_DIR / f"{names[0]}.mp4").exists()
    assert (settings.OUTPUT_DIR / f"{names[2]}.mp4").exists()
    assert VideoJob.objects.get(request_id=names[0]).result["expired"] is True


def test_history_purge_deletes_an_upload_whose_input_task_never_ran(settings):
    job = make_job(image_url="", image_bytes=png_bytes())
    stored = Path(settings.MEDIA_ROOT) / "inputs" / f"{job.request_id}.upload"
    assert stored.is_file()
    services.request_cancel(request_id=job.request_id)  # and its prepare_input task was lost
    VideoJob.objects.filter(pk=job.pk).update(finished_at=timezone.now() - timedelta(days=40))
    assert services.purge_finished_jobs(older_than_days=30) == 1
    assert not stored.exists()


def test_history_purge_deletes_old_finished_jobs_only():
    old = make_job()
    services.fail_input(job_id=old.pk, code="X", reason="done")
    VideoJob.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=40))
    running = make_job()
    assert services.purge_finished_jobs(older_than_days=30) == 1
    assert list(VideoJob.objects.values_list("pk", flat=True)) == [running.pk]
