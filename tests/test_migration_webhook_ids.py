"""Migration 0007 (issue 20): every webhook delivery gets an opaque id, its X-Webhook-Id, the
deliveries already stored too; and the bodies they stored lose their video's server path, so a
retry or an operator's "Deliver again" sends none."""
from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("videojobs", "0006_metric_totals")]
AFTER = [("videojobs", "0007_webhook_public_id")]


@pytest.fixture
def migrated_back():
    """The database at BEFORE; put back at the latest migrations afterwards."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    yield executor.loader.project_state(BEFORE).apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_stored_deliveries_get_distinct_opaque_ids_and_lose_their_video_paths(migrated_back):
    Job = migrated_back.get_model("videojobs", "VideoJob")
    Delivery = migrated_back.get_model("videojobs", "WebhookDelivery")
    job = Job.objects.create(request_id="a" * 32, prompt="p")
    bodies = [
        {"requestId": job.request_id, "results": {"video_url": "/videos/x.mp4",
                                                  "video_path": f"/var/lib/videogen/videos/{job.request_id}.mp4"}},
        {"requestId": job.request_id, "results": {"video_path": f"generated_videos/{job.request_id}.mp4",
                                                  "frames": 25}},
        {"requestId": job.request_id, "results": None, "status": "InProgress"},
    ]
    for body in bodies:
        Delivery.objects.create(job=job, event="completed", url="https://hooks.example.com/v", payload=body)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    Delivery = executor.loader.project_state(AFTER).apps.get_model("videojobs", "WebhookDelivery")
    rows = list(Delivery.objects.order_by("pk"))
    ids = [row.public_id for row in rows]
    assert len(set(ids)) == 3 and all(isinstance(i, uuid.UUID) and i.version == 4 for i in ids)
    assert [row.payload["results"] for row in rows] == [
        {"video_url": "/videos/x.mp4", "video_path": f"{job.request_id}.mp4"},
        {"video_path": f"{job.request_id}.mp4", "frames": 25},
        None,
    ]
    # A delivery created after the migration gets its own id.
    new = Delivery.objects.create(job_id=job.pk, event="started", url="https://hooks.example.com/v")
    assert new.public_id not in ids
