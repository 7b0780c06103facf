"""What the services hand to other processes once a transaction commits: django-q2 tasks
(prepare an input, deliver a webhook) and the NOTIFY that wakes idle daemons."""
from __future__ import annotations

from django.conf import settings
from django.db import connection
from django_q.tasks import async_task


# The channel the daemon LISTENs on; prepare_input NOTIFYs it when a job becomes claimable.
READY_CHANNEL = "videojobs_ready"


def notify_ready(payload: str) -> None:
    """Wake idle daemons. NOTIFY is delivered at commit, once the claimable row is visible."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [READY_CHANNEL, payload])


def enqueue_prepare_input(job_id: int) -> None:
    async_task("videojobs.tasks.prepare_input", job_id, task_name=f"prepare_input-{job_id}")


def enqueue_webhook(delivery_id: int) -> None:
    """On the deliveries' own cluster: a receiver that hangs never holds a worker that prepares
    another client's input (settings.WEBHOOK_CLUSTER)."""
    async_task("videojobs.tasks.deliver_webhook", delivery_id, task_name=f"webhook-{delivery_id}",
               cluster=settings.WEBHOOK_CLUSTER)
