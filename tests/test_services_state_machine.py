"""videojobs.services: every transition guarded, every daemon write fenced."""
from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.utils import timezone

from tests.conftest import make_job, make_ready_job
from videojobs import errors, services
from videojobs.models import JobEvent, JobStatus, VideoJob

pytestmark = pytest.mark.django_db


def claim():
    return services.claim_next_job(worker="w1", lease_seconds=60)


def test_job_without_ready_input_is_not_claimable():
    make_job()
    assert claim() is None


def test_claim_takes_the_oldest_ready_job_and_counts_the_attempt():
    first = make_ready_job()
    make_ready_job()
    job = claim()
    assert job.pk == first.pk
    assert job.status == JobStatus.IN_PROGRESS
    assert job.attempt == 1
    assert job.lease_until is not None and job.worker == "w1"


def test_complete_is_fenced_on_attempt():
    make_ready_job()
    job = claim()
    assert not services.complete_job(job_id=job.pk, attempt=job.attempt + 1, result={}, timings={})
    assert services.complete_job(job_id=job.pk, attempt=job.attempt, result={"frames": 25}, timings={})
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.SUCCEED


def test_finished_job_cannot_be_moved_by_any_transition():
    make_ready_job()
    job = claim()
    services.complete_job(job_id=job.pk, attempt=job.attempt, result={}, timings={})
    assert not services.fail_job(job_id=job.pk, attempt=job.attempt, code="X", reason="late")
    assert not services.heartbeat(job_id=job.pk, attempt=job.attempt)
    assert not services.report_progress(job_id=job.pk, attempt=job.attempt, phase="denoising", step=3)
    assert not services.fail_input(job_id=job.pk, code="X", reason="late")
    assert not services.mark_input_ready(job_id=job.pk, image_path="x", sha256="y")
    with pytest.raises(errors.JobAlreadyFinished):
        services.request_cancel(request_id=job.request_id)
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.SUCCEED


@pytest.mark.parametrize("request_id", ["\x00", "0" * 31 + "\x00", "\x00" * 32, 12345, None])
def test_cancel_of_a_malformed_request_id_is_job_not_found_for_every_caller(request_id):
    # The id is checked where every caller's cancel goes (the API, the page, the admin): a NUL
    # byte, which Postgres refuses in text, never reaches a query (issue 20, item 3).
    job = make_job()
    for owner in ("", None):
        with pytest.raises(errors.JobNotFound):
            services.request_cancel(request_id=request_id, owner=owner)
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.IN_QUEUE


def test_zombie_attempt_cannot_overwrite_after_rescue_and_reclaim():
    make_ready_job()
    zombie = claim()
    VideoJob.objects.filter(pk=zombie.pk).update(lease_until="2000-01-01T00:00:00Z")
    services.rescue_expired_leases()
    fresh = claim()
    assert fresh.attempt == zombie.attempt + 1
    assert not services.complete_job(job_id=zombie.pk, attempt=zombie.attempt, result={"z": 1}, timings={})
    assert not services.report_progress(job_id=zombie.pk, attempt=zombie.attempt, phase="denoising", step=5)
    assert services.complete_job(job_id=fresh.pk, attempt=fresh.attempt, result={"ok": 1}, timings={})
    assert VideoJob.objects.get(pk=fresh.pk).result == {"ok": 1}


def test_heartbeat_extends_the_lease():
    make_ready_job()
    job = claim()
    before = VideoJob.objects.get(pk=job.pk).lease_until
    assert services.heartbeat(job_id=job.pk, attempt=job.attempt, lease_seconds=600)
    assert VideoJob.objects.get(pk=job.pk).lease_until > before


def test_report_progress_rejects_unknown_phase():
    make_ready_job()
    job = claim()
    with pytest.raises(ValueError, match="unknown phase"):
        services.report_progress(job_id=job.pk, attempt=job.attempt, phase="dreaming")


def test_finish_cancelled_requires_a_cancel_request():
    make_ready_job()
    job = claim()
    assert not services.finish_cancelled_job(job_id=job.pk, attempt=job.attempt)
    services.request_cancel(request_id=job.request_id)
    assert services.finish_cancelled_job(job_id=job.pk, attempt=job.attempt)
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_requeue_gives_failed_job_fresh_attempts():
    make_ready_job()
    job = claim()
    services.fail_job(job_id=job.pk, attempt=job.attempt, code="X", reason="boom")
    assert services.requeue_job(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.IN_QUEUE and job.reason == "" and job.max_attempts > job.attempt
    again = claim()
    assert again.pk == job.pk and again.attempt == 2


def test_requeue_of_running_job_is_refused():
    make_ready_job()
    job = claim()
    assert not services.requeue_job(job_id=job.pk)


@pytest.mark.django_db(transaction=True)
def test_concurrent_complete_and_cancel_leave_one_consistent_end_state():
    # A cancel racing a completion: whichever commits first wins, the other changes nothing.
    for _ in range(10):
        make_ready_job()
        job = claim()
        barrier = threading.Barrier(2)
        outcomes = {}

        def complete():
            barrier.wait()
            outcomes["complete"] = services.complete_job(job_id=job.pk, attempt=job.attempt, result={}, timings={})
            connection.close()

        def cancel():
            barrier.wait()
            try:
                services.request_cancel(request_id=job.request_id)
                outcomes["cancel"] = services.finish_cancelled_job(job_id=job.pk, attempt=job.attempt)
            except errors.JobAlreadyFinished:
                outcomes["cancel"] = False
            connection.close()

        threads = [threading.Thread(target=complete), threading.Thread(target=cancel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = VideoJob.objects.get(pk=job.pk).status
        assert outcomes["complete"] != outcomes["cancel"]
        assert final == (JobStatus.SUCCEED if outcomes["complete"] else JobStatus.CANCELLED)


def test_release_puts_the_job_back_without_charging_the_attempt(settings):
    make_ready_job()
    job = claim()
    assert services.release_job(job_id=job.pk, attempt=job.attempt)
    job.refresh_from_db()
    assert job.status == JobStatus.IN_QUEUE and job.worker == "" and job.lease_until is None
    assert job.max_attempts - job.attempt == settings.JOB_MAX_ATTEMPTS
    assert not services.release_job(job_id=job.pk, attempt=job.attempt)


@pytest.mark.parametrize("ending", ["input failure", "daemon failure", "any other end (end_jobs)"])
def test_a_job_never_keeps_a_server_path_in_its_reason_however_it_ends(ending):
    # The reason reaches clients (status document, webhooks, the job page); the event keeps it too.
    reason = "cannot open '/var/lib/videogen/media/inputs/x.png': Permission denied"
    job = make_job() if ending == "input failure" else make_ready_job()
    if ending == "input failure":
        assert services.fail_input(job_id=job.pk, code="IMAGE_NOT_AN_IMAGE", reason=reason)
    elif ending == "daemon failure":
        assert services.fail_job(job_id=job.pk, attempt=claim().attempt, code="INFERENCE_ERROR", reason=reason)
    else:
        assert services.end_jobs(VideoJob.objects.filter(pk=job.pk), status=JobStatus.FAILED, now=timezone.now(),
                                 reason=reason, error_code="INTERNAL_ERROR")
    job.refresh_from_db()
    assert job.reason == "cannot open '<path>': Permission denied"
    assert JobEvent.objects.get(job=job, kind="failed").detail == job.reason
