"""The admin's workers page and webhook deliveries (issue 9)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.admin_support import (
    DELIVERIES,
    RELOAD,
    TOPOLOGY,
    WORKERS,
    running_job,
)
from tests.conftest import make_job
from videojobs import selectors, services
from videojobs.models import (
    DeliveryState,
    InferenceWorker,
    JobStatus,
    VideoJob,
    WebhookDelivery,
)

pytestmark = pytest.mark.django_db


def _ran(job: VideoJob, *, worker: str, seconds: float, status: str = JobStatus.SUCCEED) -> None:
    """A finished job that ran ``seconds`` on ``worker`` (test setup of the history)."""
    start = timezone.now() - timedelta(hours=1)
    VideoJob.objects.filter(pk=job.pk).update(status=status, worker=worker, started_at=start,
                                              finished_at=start + timedelta(seconds=seconds))


def test_worker_mean_seconds_averages_succeeded_jobs_per_worker_in_one_query(django_assert_num_queries):
    for worker, seconds, status in [("w1", 10, JobStatus.SUCCEED), ("w1", 20, JobStatus.SUCCEED),
                                    ("w1", 500, JobStatus.FAILED), ("w2", 30.5, JobStatus.SUCCEED)]:
        _ran(make_job(), worker=worker, seconds=seconds, status=status)
    with django_assert_num_queries(1):
        means = selectors.worker_mean_seconds()
    assert means == pytest.approx({"w1": 15.0, "w2": 30.5})


def test_workers_page_shows_topology_state_current_job_heartbeat_and_mean_seconds(admin_client, settings):
    services.register_worker(name="w1", host="h", pid=1, world_size=4, topology=TOPOLOGY, device="cuda:0-3",
                             model="/models/Wan2.1-I2V-14B-720P")
    services.register_worker(name="w2", host="h", pid=2, world_size=1, topology={}, device="cpu", model="tiny")
    for seconds in (10, 20):
        _ran(make_job(), worker="w1", seconds=seconds)
    running = running_job(settings, worker="w2")
    services.update_worker(name="w2", state="busy", current_job_id=running.pk)

    response = admin_client.get(WORKERS)
    assert response.status_code == 200
    html = response.content.decode()
    assert "4 ranks: ulysses 2 x ring 1 x cfg 2, fsdp dit" in html and "cuda:0-3" in html
    assert 'title="/models/Wan2.1-I2V-14B-720P">Wan2.1-I2V-14B-720P<' in html
    assert f'<a href="/admin/videojobs/videojob/{running.pk}/change/">{running.request_id}</a>' in html
    assert "<td class=\"field-mean_seconds_display\">15.0 s</td>" in html
    assert " s ago" in html and "loading" in html and "busy" in html
    assert RELOAD in html  # a job runs
    assert admin_client.get(f"{WORKERS}?norefresh=1").status_code == 200
    worker = InferenceWorker.objects.get(name="w1")
    assert "15.0 s" in admin_client.get(f"{WORKERS}{worker.pk}/change/").content.decode()


def test_workers_page_marks_a_silent_worker_stale_and_stops_refreshing_when_idle(admin_client, settings):
    services.register_worker(name="w1", host="h", pid=1, world_size=1, topology={}, device="cpu", model="tiny")
    services.update_worker(name="w1", state="idle")
    assert RELOAD not in admin_client.get(WORKERS).content.decode()
    InferenceWorker.objects.filter(name="w1").update(heartbeat_at=timezone.now() - timedelta(hours=2))
    html = admin_client.get(WORKERS).content.decode()
    assert "idle (stale)" in html and "hours ago" in html


# --- webhook deliveries -------------------------------------------------------------------------


def _delivery(job: VideoJob, **fields) -> WebhookDelivery:
    values = {"event": "completed", "url": "https://hooks.example.com/video", "payload": {"requestId": job.request_id,
              "status": job.status}, "state": DeliveryState.FAILED, "attempts": 2, "last_status_code": 500,
              "last_error": "HTTP 500", "log": [
                  {"at": "2025-01-01T10:00:00+00:00", "status_code": None, "error": "connection refused", "seconds": 0.01},
                  {"at": "2025-01-01T10:00:30+00:00", "status_code": 500, "error": "HTTP 500", "seconds": 0.2}]}
    return WebhookDelivery.objects.create(job=job, **{**values, **fields})


def test_delivery_list_filters_searches_and_links_the_job(admin_client):
    first, second = make_job(), make_job()
    failed = _delivery(first)
    delivered = _delivery(second, state=DeliveryState.DELIVERED, url="https://other.example.org/h", attempts=1)

    html = admin_client.get(DELIVERIES).content.decode()
    assert f'<a href="/admin/videojobs/videojob/{first.pk}/change/">{first.request_id}</a>' in html
    html = admin_client.get(f"{DELIVERIES}?state__exact=failed").content.decode()
    assert first.request_id in html and second.request_id not in html
    html = admin_client.get(f"{DELIVERIES}?event__exact=started").content.decode()
    assert first.request_id not in html and second.request_id not in html
    html = admin_client.get(f"{DELIVERIES}?q={second.request_id[:10]}").content.decode()
    assert second.request_id in html and first.request_id not in html
    html = admin_client.get(f"{DELIVERIES}?q=other.example.org").content.decode()
    assert f"/admin/videojobs/webhookdelivery/{delivered.pk}/change/" in html
    assert f"/admin/videojobs/webhookdelivery/{failed.pk}/change/" not in html


def test_delivery_page_shows_the_attempt_log_and_the_payload(admin_client):
    job = make_job()
    delivery = _delivery(job)
    html = admin_client.get(f"{DELIVERIES}{delivery.pk}/change/").content.decode()
    assert "<td>2025-01-01T10:00:00+00:00</td><td>-</td><td>connection refused</td><td>0.01</td>" in html
    assert "<td>500</td><td>HTTP 500</td><td>0.20</td>" in html
    assert f'<pre>{{\n  &quot;requestId&quot;: &quot;{job.request_id}&quot;,' in html


def test_delivery_page_shows_the_webhook_id_receivers_see_and_the_list_finds_it(admin_client):
    job = make_job()
    delivery, other = _delivery(job), _delivery(job)
    html = admin_client.get(f"{DELIVERIES}{delivery.pk}/change/").content.decode()
    assert str(delivery.public_id) in html and str(other.public_id) not in html
    html = admin_client.get(f"{DELIVERIES}?q={delivery.public_id}").content.decode()
    assert f"/admin/videojobs/webhookdelivery/{delivery.pk}/change/" in html
    assert f"/admin/videojobs/webhookdelivery/{other.pk}/change/" not in html


def test_deliver_again_sends_undelivered_deliveries_now_and_leaves_delivered_ones(
        admin_client, django_capture_on_commit_callbacks):
    job = make_job()
    failed = _delivery(job)
    delivered = _delivery(job, state=DeliveryState.DELIVERED, attempts=1)
    with django_capture_on_commit_callbacks() as sends:
        admin_client.post(DELIVERIES, {"action": "deliver_again", "_selected_action": [failed.pk, delivered.pk]})
    assert len(sends) == 1  # one send handed to django-q2
    failed.refresh_from_db()
    delivered.refresh_from_db()
    assert failed.state == DeliveryState.PENDING and failed.next_attempt_at <= timezone.now()
    assert (delivered.state, delivered.attempts, delivered.next_attempt_at) == (DeliveryState.DELIVERED, 1, None)
