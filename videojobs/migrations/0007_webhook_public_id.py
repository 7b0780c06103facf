# Issue 20: X-Webhook-Id was the delivery's sequential pk; it is now an opaque UUID. The column's
# database default (gen_random_uuid()) gives every existing row its own when the column is added.
# Bodies stored before named the video by the daemon's path (absolute when OUTPUT_DIR was outside
# the project): they keep only its name, relative to OUTPUT_DIR, as the status document now does.

import uuid
from pathlib import PurePosixPath

import django.contrib.postgres.functions
from django.db import migrations, models


def drop_video_paths(apps, schema_editor):
    WebhookDelivery = apps.get_model("videojobs", "WebhookDelivery")
    for delivery in WebhookDelivery.objects.filter(payload__results__has_key="video_path").iterator():
        results = delivery.payload["results"]
        results["video_path"] = PurePosixPath(str(results["video_path"])).name
        WebhookDelivery.objects.filter(pk=delivery.pk).update(payload=delivery.payload)


class Migration(migrations.Migration):

    dependencies = [
        ("videojobs", "0006_metric_totals"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookdelivery",
            name="public_id",
            field=models.UUIDField(db_default=django.contrib.postgres.functions.RandomUUID(), default=uuid.uuid4,
                                   editable=False, unique=True),
        ),
        migrations.RunPython(drop_video_paths, migrations.RunPython.noop),
    ]
