"""POST /video/cancel."""
from __future__ import annotations

import pytest

from tests.conftest import make_job, make_ready_job
from videojobs import services
from videojobs.models import JobStatus, VideoJob

pytestmark = pytest.mark.django_db

URL = "/video/cancel"


def cancel(api, request_id):
    return api.post(URL, {"requestId": request_id}, format="json")


def test_cancel_of_queued_job_cancels_it_at_once(api):
    job = make_job()
    response = cancel(api, job.request_id)
    assert response.status_code == 200
    assert response.json()["status"] == "Cancelled"
    assert response.json()["job_status"] == "Cancelled"
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_cancel_of_running_job_requests_a_stop(api):
    make_ready_job()
    claimed = services.claim_next_job(worker="w1")
    response = cancel(api, claimed.request_id)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "Cancelled" and body["job_status"] == "InProgress"
    job = VideoJob.objects.get(pk=claimed.pk)
    assert job.cancel_requested_at is not None
    assert services.finish_cancelled_job(job_id=job.pk, attempt=job.attempt)
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_cancel_twice_is_harmless(api):
    job = make_job()
    assert cancel(api, job.request_id).status_code == 200
    assert cancel(api, job.request_id).status_code == 200


def test_cancel_of_finished_job_is_409(api):
    job = make_job()
    services.fail_input(job_id=job.pk, code="X", reason="broken")
    response = cancel(api, job.request_id)
    assert response.status_code == 409
    assert response.json()["error"] == "ALREADY_FINISHED"


def test_cancelled_job_is_never_claimed(api):
    job = make_ready_job()
    cancel(api, job.request_id)
    assert services.claim_next_job(worker="w1") is None


def test_cancel_of_unknown_job_is_404(api):
    assert cancel(api, "f" * 32).status_code == 404
