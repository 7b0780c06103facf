"""Webhook deliveries: queued with a job's event, sent by django-q2, retried by a sweep, every
attempt recorded. The transport (signature, address rules, one POST) is videojobs.net.webhooks."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from videojobs import selectors
from videojobs.models import DeliveryState, VideoJob, WebhookDelivery, WebhookEvent
from videojobs.net import webhooks as transport
from videojobs.services import handoff

event_log = logging.getLogger("videojobs.events")


def queue_webhook(*, job: VideoJob, event: str) -> WebhookDelivery | None:
    """A delivery of ``event`` with the job's status document, sent once the transaction commits."""
    if not job.webhook_url or event not in (job.webhook_events or [WebhookEvent.COMPLETED]):
        return None
    delivery = WebhookDelivery.objects.create(job=job, event=event, url=job.webhook_url,
                                              payload=selectors.webhook_document(job=job), next_attempt_at=timezone.now())
    transaction.on_commit(lambda: handoff.enqueue_webhook(delivery.pk))
    return delivery


def webhook_retry_delay(*, attempts: int) -> int:
    """Seconds before the next try after ``attempts`` failed ones: WEBHOOK_RETRY_SECONDS,
    tripled each time, at most an hour."""
    return min(settings.WEBHOOK_RETRY_SECONDS * 3 ** max(attempts - 1, 0), 3600)


@transaction.atomic
def _take_delivery(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    """Claim a due delivery for one sender: its next try moves past this send's deadline, so a
    second sender (the sweep, a duplicate task) skips it meanwhile."""
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT + 30)
    taken = WebhookDelivery.objects.filter(pk=delivery_id, state=DeliveryState.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).update(next_attempt_at=lease)
    return WebhookDelivery.objects.select_related("job").get(pk=delivery_id) if taken else None


def deliver_webhook(*, delivery_id: int, now: datetime | None = None) -> str | None:
    """Send one due delivery and record the outcome: delivered; or pending with a later try; or
    failed once WEBHOOK_MAX_ATTEMPTS tries failed. Returns the new state (None: not due)."""
    delivery = _take_delivery(delivery_id, now or timezone.now())
    if delivery is None:
        return None
    # 1. Sign the stored body (the status document at the time of the event) and send it.
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    stamp = int(timezone.now().timestamp())
    headers = {
        transport.TIMESTAMP_HEADER: str(stamp),
        transport.SIGNATURE_HEADER: transport.sign(secret=settings.WEBHOOK_SECRET, timestamp=stamp, body=body),
        transport.EVENT_HEADER: delivery.event,
        transport.ID_HEADER: str(delivery.public_id),  # opaque; the same on every try of this delivery
    }
    outcome = transport.post(delivery.url, body=body, headers=headers, policy=transport.policy_from_settings())
    # 2. Record it, outside any lock held during the send.
    return _record_attempt(delivery, outcome)


@transaction.atomic
def _record_attempt(delivery: WebhookDelivery, outcome) -> str:
    now = timezone.now()
    attempts = delivery.attempts + 1
    entry = {"at": now.isoformat(), "status_code": outcome.status_code, "error": outcome.error,
             "seconds": round(outcome.seconds, 3)}
    if outcome.ok:
        state, next_at = DeliveryState.DELIVERED, None
    elif attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        state, next_at = DeliveryState.FAILED, None
    else:
        state, next_at = DeliveryState.PENDING, now + timedelta(seconds=webhook_retry_delay(attempts=attempts))
    WebhookDelivery.objects.filter(pk=delivery.pk, state=DeliveryState.PENDING).update(
        state=state, attempts=attempts, next_attempt_at=next_at, last_attempt_at=now,
        last_status_code=outcome.status_code, last_error=outcome.error, log=[*delivery.log, entry],
        delivered_at=now if outcome.ok else None)
    level = logging.INFO if outcome.ok else logging.WARNING
    event_log.log(level, "webhook %s of job %s: %s", delivery.event, delivery.job.request_id,
                  "delivered" if outcome.ok else f"{outcome.error} (try {attempts}, now {state})",
                  extra={"event": f"webhook_{state}", "request_id": delivery.job.request_id,
                         "worker": delivery.job.worker})
    return state


def deliver_due_webhooks(*, now: datetime | None = None, limit: int = 200) -> int:
    """Sweep: hand every pending delivery whose next try is due to django-q2 (retries, and first
    tries whose task was lost). Returns how many were handed on."""
    now = now or timezone.now()
    due = list(WebhookDelivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lte=now)
               .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    for delivery_id in due:
        handoff.enqueue_webhook(delivery_id)
    return len(due)


@transaction.atomic
def redeliver_webhook(*, delivery_id: int) -> bool:
    """Operator action: try a delivery again now (also one that gave up). One more attempt: a
    delivery past WEBHOOK_MAX_ATTEMPTS that fails again is failed again, not retried."""
    updated = WebhookDelivery.objects.filter(pk=delivery_id).exclude(state=DeliveryState.DELIVERED).update(
        state=DeliveryState.PENDING, next_attempt_at=timezone.now())
    if updated:
        transaction.on_commit(lambda: handoff.enqueue_webhook(delivery_id))
    return bool(updated)
