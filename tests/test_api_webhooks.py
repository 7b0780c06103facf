"""Webhook fields of POST /video/submit: the address rules at submit, and a signed delivery
reaching a local receiver through django-q2 (run inline)."""
from __future__ import annotations

import json

import pytest

from tests.webhook_receiver import Receiver
from videojobs import services
from videojobs.models import VideoJob, WebhookDelivery
from videojobs.net import webhooks

pytestmark = pytest.mark.django_db

SECRET = "api-webhook-secret-0123456789abcdef0123456789"


@pytest.fixture(autouse=True)
def _webhooks_on(settings):
    settings.WEBHOOK_SECRET = SECRET
    settings.WEBHOOK_ALLOWED_NETWORKS = []


def submit(api, valid_submit, **fields):
    return api.post("/video/submit", {**valid_submit, **fields}, format="json")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://[::1]/hook",
                                 "http://169.254.169.254/latest/meta-data", "http://localhost/hook",
                                 "http://0.0.0.0/hook"])
def test_private_webhook_url_is_refused(api, valid_submit, url):
    response = submit(api, valid_submit, webhook_url=url)
    assert response.status_code == 400, response.content
    assert "non-public address" in response.json()["fields"]["webhook_url"][0]
    assert not VideoJob.objects.exists()


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "not a url"])
def test_webhook_url_must_be_http(api, valid_submit, url):
    response = submit(api, valid_submit, webhook_url=url)
    assert response.status_code == 400
    assert "webhook_url" in response.json()["fields"]


def test_unknown_event_and_events_without_url_are_refused(api, valid_submit):
    response = submit(api, valid_submit, webhook_url="https://example.com/h", webhook_events=["finished"])
    assert response.status_code == 400 and "webhook_events" in response.json()["fields"]
    response = submit(api, valid_submit, webhook_events=["started"])
    assert response.status_code == 400 and "webhook_url" in response.json()["fields"]


def test_webhooks_are_refused_without_a_secret(api, valid_submit, settings):
    settings.WEBHOOK_SECRET = ""
    response = submit(api, valid_submit, webhook_url="https://example.com/h")
    assert response.status_code == 400
    assert response.json()["error"] == "WEBHOOKS_DISABLED"


def test_allowed_private_network_reaches_the_receiver_through_django_q(api, valid_submit, settings, monkeypatch,
                                                                      django_capture_on_commit_callbacks):
    from django_q.conf import Conf

    # django-q2 in sync mode runs each task inline where it is enqueued: the job's ending
    # enqueues the delivery at commit, and the delivery reaches the receiver.
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    monkeypatch.setattr(Conf, "SYNC", True)
    with Receiver() as receiver:
        response = submit(api, valid_submit, webhook_url=receiver.url, webhook_events=["completed"])
        assert response.status_code == 202, response.content
        job = VideoJob.objects.get(request_id=response.json()["requestId"])
        with django_capture_on_commit_callbacks(execute=True):
            services.request_cancel(request_id=job.request_id)
    [request] = receiver.requests
    assert webhooks.verify(secret=SECRET, timestamp=request["headers"]["X-Webhook-Timestamp"], body=request["body"],
                           signature=request["headers"]["X-Signature"])
    assert json.loads(request["body"])["status"] == "Cancelled"
    assert WebhookDelivery.objects.get(job=job).state == "delivered"
