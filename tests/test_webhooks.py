"""Webhooks: signed deliveries to a local receiver, retries, the event filter, the address rules,
and every way a job ends sends its "completed" event."""
from __future__ import annotations

import ast
import json
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from django.utils import timezone

from tests.conftest import make_job, make_ready_job
from tests.webhook_receiver import Receiver
from videojobs import services
from videojobs.models import DeliveryState, JobEvent, JobStatus, VideoJob, WebhookDelivery
from videojobs.net import webhooks

pytestmark = pytest.mark.django_db

SECRET = "test-webhook-secret-0123456789abcdef0123456789"


@pytest.fixture(autouse=True)
def _webhooks_on(settings):
    settings.WEBHOOK_SECRET = SECRET
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.WEBHOOK_TIMEOUT = 5.0
    settings.WEBHOOK_RETRY_SECONDS = 30


def run_job_to_success(job):
    claimed = services.claim_next_job(worker="w1", lease_seconds=60)
    assert claimed.pk == job.pk
    services.report_progress(job_id=job.pk, attempt=claimed.attempt, phase="denoising", step=4, total_steps=4)
    assert services.complete_job(job_id=job.pk, attempt=claimed.attempt, result={"video_file": f"{job.request_id}.mp4"},
                                 timings={"denoise": 1.0})
    return claimed


def test_completed_webhook_reaches_receiver_with_valid_signature():
    with Receiver() as receiver:
        job = make_ready_job(webhook_url=receiver.url)
        run_job_to_success(job)
        delivery = WebhookDelivery.objects.get(job=job)
        assert (delivery.event, delivery.state) == ("completed", DeliveryState.PENDING)

        assert services.deliver_webhook(delivery_id=delivery.pk) == DeliveryState.DELIVERED

    [request] = receiver.requests
    headers, body = request["headers"], request["body"]
    assert request["path"] == "/hooks/video"
    assert webhooks.verify(secret=SECRET, timestamp=headers["X-Webhook-Timestamp"], body=body,
                           signature=headers["X-Signature"])
    assert not webhooks.verify(secret="another secret", timestamp=headers["X-Webhook-Timestamp"], body=body,
                               signature=headers["X-Signature"])
    assert (headers["X-Webhook-Event"], headers["X-Webhook-Id"]) == ("completed", str(delivery.public_id))
    document = json.loads(body)
    assert document["requestId"] == job.request_id
    assert document["status"] == "Succeed"
    assert document["results"]["video_url"] == f"/videos/{job.request_id}.mp4"
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.last_status_code == 200 and delivery.delivered_at is not None


def test_the_webhook_id_is_an_opaque_uuid_the_same_on_every_try():
    with Receiver(statuses=[500]) as receiver:
        job = make_ready_job(webhook_url=receiver.url)
        run_job_to_success(job)
        delivery = WebhookDelivery.objects.get(job=job)
        assert services.deliver_webhook(delivery_id=delivery.pk) == DeliveryState.PENDING
        assert services.redeliver_webhook(delivery_id=delivery.pk)
        assert services.deliver_webhook(delivery_id=delivery.pk) == DeliveryState.DELIVERED
    # A receiver drops duplicates by it, and learns nothing from it (no row count, no neighbour's id).
    sent = [UUID(request["headers"]["X-Webhook-Id"]) for request in receiver.requests]
    assert sent == [delivery.public_id, delivery.public_id] and sent[0].version == 4


def test_the_completed_webhook_names_the_video_relative_to_the_output_folder(settings):
    # The result as the daemon kept it before issue 20: OUTPUT_DIR outside the project gave an
    # absolute path (tmp_path is outside, like /var/lib/videogen/videos).
    with Receiver() as receiver:
        job = make_ready_job(webhook_url=receiver.url)
        claimed = services.claim_next_job(worker="w1", lease_seconds=60)
        name = f"{job.request_id}.mp4"
        assert services.complete_job(job_id=job.pk, attempt=claimed.attempt, timings={},
                                     result={"video_path": str(settings.OUTPUT_DIR / name), "video_file": name})
        services.deliver_webhook(delivery_id=WebhookDelivery.objects.get(job=job).pk)
    [request] = receiver.requests
    assert json.loads(request["body"])["results"]["video_path"] == name
    assert str(settings.OUTPUT_DIR).encode() not in request["body"]


def test_signature_is_refused_for_a_changed_body_or_an_old_timestamp():
    body = b'{"status":"Succeed"}'
    stamp = int(timezone.now().timestamp())
    signature = webhooks.sign(secret=SECRET, timestamp=stamp, body=body)
    assert webhooks.verify(secret=SECRET, timestamp=str(stamp), body=body, signature=signature)
    assert not webhooks.verify(secret=SECRET, timestamp=str(stamp), body=body + b" ", signature=signature)
    assert not webhooks.verify(secret=SECRET, timestamp=str(stamp), body=body, signature=signature,
                               now=stamp + 3600)
    assert not webhooks.verify(secret=SECRET, timestamp="yesterday", body=body, signature=signature)


def test_receiver_error_is_retried_later_and_then_delivered(settings):
    with Receiver(statuses=[500]) as receiver:
        job = make_ready_job(webhook_url=receiver.url)
        run_job_to_success(job)
        delivery = WebhookDelivery.objects.get(job=job)

        assert services.deliver_webhook(delivery_id=delivery.pk) == DeliveryState.PENDING
        delivery.refresh_from_db()
        assert (delivery.attempts, delivery.last_status_code) == (1, 500)
        assert "HTTP 500" in delivery.last_error
        wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
        assert wait == pytest.approx(30, abs=1)
        # Not due yet: neither a duplicate task nor the sweep sends it again now.
        assert services.deliver_webhook(delivery_id=delivery.pk) is None
        assert services.deliver_due_webhooks(now=timezone.now()) == 0

        later = delivery.next_attempt_at + timedelta(seconds=1)
        assert services.deliver_due_webhooks(now=later) == 1
        assert services.deliver_webhook(delivery_id=delivery.pk, now=later) == DeliveryState.DELIVERED

    assert len(receiver.requests) == 2
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert [entry["status_code"] for entry in delivery.log] == [500, 200]


def test_delivery_gives_up_after_max_attempts_and_can_be_sent_again(settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    with Receiver(statuses=[503, 503]) as receiver:
        job = make_ready_job(webhook_url=receiver.url)
        run_job_to_success(job)
        delivery = WebhookDelivery.objects.get(job=job)
        far = timezone.now() + timedelta(days=1)
        assert services.deliver_webhook(delivery_id=delivery.pk) == DeliveryState.PENDING
        assert services.deliver_webhook(delivery_id=delivery.pk, now=far) == DeliveryState.FAILED
        assert services.deliver_due_webhooks(now=far + timedelta(days=1)) == 0

        assert services.redeliver_webhook(delivery_id=delivery.pk)
        assert services.deliver_webhook(delivery_id=delivery.pk) == DeliveryState.DELIVERED
    assert len(receiver.requests) == 3


def test_retry_delay_grows_and_is_capped(settings):
    settings.WEBHOOK_RETRY_SECONDS = 30
    delays = [services.webhook_retry_delay(attempts=n) for n in range(1, 8)]
    assert delays == [30, 90, 270, 810, 2430, 3600, 3600]


def test_event_filter_sends_only_the_events_asked_for():
    job = make_ready_job(webhook_url="http://127.0.0.1:9/hook", webhook_events=["started", "progress"])
    claimed = services.claim_next_job(worker="w1", lease_seconds=60)
    for step in range(1, 21):
        services.report_progress(job_id=job.pk, attempt=claimed.attempt, phase="denoising", step=step, total_steps=20)
    services.complete_job(job_id=job.pk, attempt=claimed.attempt, result={}, timings={})

    events = list(WebhookDelivery.objects.filter(job=job).order_by("id").values_list("event", flat=True))
    # One "progress" per tenth of the 20 steps, no "completed": it was not asked for.
    assert events == ["started"] + ["progress"] * 10
    steps = [d.payload["step"] for d in WebhookDelivery.objects.filter(job=job, event="progress").order_by("id")]
    assert steps == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]


def test_default_event_is_completed_only():
    job = make_ready_job(webhook_url="http://127.0.0.1:9/hook")
    assert job.webhook_events == ["completed"]
    run_job_to_success(job)
    assert list(WebhookDelivery.objects.filter(job=job).values_list("event", flat=True)) == ["completed"]


def test_job_without_webhook_records_events_but_sends_nothing():
    job = make_ready_job()
    run_job_to_success(job)
    assert not WebhookDelivery.objects.exists()
    kinds = list(JobEvent.objects.filter(job=job).values_list("kind", flat=True))
    assert kinds == ["submitted", "input_ready", "started", "succeeded"]


def _claimed(job):
    return services.claim_next_job(worker="w1", lease_seconds=60)


ENDINGS = {
    "complete": lambda job: services.complete_job(job_id=job.pk, attempt=_claimed(job).attempt, result={}, timings={}),
    "fail": lambda job: services.fail_job(job_id=job.pk, attempt=_claimed(job).attempt, code="INFERENCE_ERROR",
                                          reason="boom"),
    "cancel_queued": lambda job: services.request_cancel(request_id=job.request_id),
    "cancel_running": lambda job: (services.request_cancel(request_id=_claimed(job).request_id),
                                   services.finish_cancelled_job(job_id=job.pk, attempt=1)),
    "input_failure": lambda job: services.fail_input(job_id=job.pk, code="IMAGE_HTTP_ERROR", reason="HTTP 404"),
    "timeout": lambda job: (_claimed(job), VideoJob.objects.filter(pk=job.pk).update(
        started_at=timezone.now() - timedelta(days=1)), services.fail_timed_out_jobs()),
    "lease_rescue_spent": lambda job: (VideoJob.objects.filter(pk=job.pk).update(max_attempts=1), _claimed(job),
                                       services.rescue_expired_leases(now=timezone.now() + timedelta(hours=1))),
    "lease_rescue_cancelled": lambda job: (_claimed(job), services.request_cancel(request_id=job.request_id),
                                           services.rescue_expired_leases(now=timezone.now() + timedelta(hours=1))),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_every_way_a_job_ends_records_one_event_and_one_completed_webhook(ending):
    job = make_ready_job(webhook_url="http://127.0.0.1:9/hook")
    ENDINGS[ending](job)
    job.refresh_from_db()
    assert job.status in ("Succeed", "Failed", "Cancelled")
    [delivery] = WebhookDelivery.objects.filter(job=job)
    assert (delivery.event, delivery.payload["status"]) == ("completed", job.status)
    endings = JobEvent.objects.filter(job=job, kind__in=["succeeded", "failed", "cancelled"])
    assert [(e.kind, e.status) for e in endings] == [({"Succeed": "succeeded", "Failed": "failed",
                                                      "Cancelled": "cancelled"}[job.status], job.status)]


def test_only_end_jobs_writes_a_finished_status():
    # The structural half of "no ending can be missed": no other code in the services package sets a
    # finished status, so every ending goes through end_jobs and records its event.
    trees = [ast.parse(path.read_text()) for path in Path(services.__file__).parent.glob("*.py")]
    finished = {"SUCCEED", "FAILED", "CANCELLED"}
    offenders = []
    functions = (n for tree in trees for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    for function in (f for f in functions if f.name != "end_jobs"):
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
            if getattr(call.func, "attr", None) not in ("update", "create"):
                continue
            for keyword in call.keywords:
                value = keyword.value
                if keyword.arg == "status" and isinstance(value, ast.Attribute) and value.attr in finished:
                    offenders.append(function.name)
    assert offenders == []


def test_rescued_job_records_requeued_and_sends_no_completed_webhook():
    job = make_ready_job(webhook_url="http://127.0.0.1:9/hook")
    _claimed(job)
    services.rescue_expired_leases(now=timezone.now() + timedelta(hours=1))
    job.refresh_from_db()
    assert job.status == JobStatus.IN_QUEUE
    assert not WebhookDelivery.objects.filter(job=job).exists()
    assert JobEvent.objects.filter(job=job, kind="requeued").count() == 1


def test_delivery_refuses_an_address_that_became_private(settings):
    # Allowed at submit (the network was allowed), refused when sent: the check is made again
    # against the address actually connected to.
    with Receiver() as receiver:
        job = make_ready_job(webhook_url=receiver.url)
        run_job_to_success(job)
        settings.WEBHOOK_ALLOWED_NETWORKS = []
        delivery = WebhookDelivery.objects.get(job=job)
        assert services.deliver_webhook(delivery_id=delivery.pk) == DeliveryState.PENDING
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert "webhook_url host resolves to a non-public address" in delivery.last_error


def test_progress_webhook_body_is_the_status_document_at_that_step():
    job = make_job(webhook_url="http://127.0.0.1:9/hook", webhook_events=["progress"])
    services.mark_input_ready(job_id=job.pk, image_path="inputs/x.png", sha256="0" * 64)
    claimed = _claimed(job)
    services.report_progress(job_id=job.pk, attempt=claimed.attempt, phase="denoising", step=5, total_steps=10)
    [delivery] = WebhookDelivery.objects.filter(job=job)
    assert delivery.payload["phase"] == "denoising"
    assert (delivery.payload["step"], delivery.payload["total_steps"]) == (5, 10)
    assert 0 < delivery.payload["progress"] < 1
