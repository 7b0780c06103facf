"""The worker row's weights and quantization: written by services.record_worker_resources, read
by /health (anonymous too: bytes and modes are not private) and shown in the admin."""
from __future__ import annotations

import pytest

from inference.quant.memory import memory_document
from tests.admin_support import WORKERS
from videojobs import selectors, services
from videojobs.models import InferenceWorker

pytestmark = pytest.mark.django_db

GIB = 1024**3
QUANTIZATION = {"dit": "int8", "t5": "none", "attention": {"backend": "_native_cudnn", "quantized": False}}
HELD = [{"transformer": 15 * GIB, "text_encoder": 10 * GIB, "image_encoder": GIB, "vae": GIB // 2}] * 2


def _worker_with_report(peaks=None) -> InferenceWorker:
    services.register_worker(name="w1", host="h", pid=1, world_size=2, topology={}, device="cuda:0-1", model="m")
    services.update_worker(name="w1", state="idle")
    services.record_worker_resources(name="w1", memory=memory_document(HELD, peaks), quantization=QUANTIZATION)
    return InferenceWorker.objects.get(name="w1")


def test_the_report_lists_every_ranks_bytes_and_the_last_jobs_peaks_only_when_measured():
    assert memory_document(HELD) == {"weights_bytes": HELD}
    assert memory_document(HELD, [None, None]) == {"weights_bytes": HELD}
    assert memory_document(HELD, [30 * GIB, 31 * GIB])["last_job_peak_bytes"] == [30 * GIB, 31 * GIB]


def test_health_shows_each_workers_quantization_and_weights_to_anyone(api):
    worker = _worker_with_report()
    body = api.get("/health").json()
    [shown] = body["workers"]["workers"]
    assert shown["quantization"] == QUANTIZATION and shown["memory"] == worker.memory
    assert shown["name"] == "#1"  # the anonymous view still hides the name


def test_the_admin_shows_the_modes_the_bytes_per_rank_and_the_peak(admin_client):
    worker = _worker_with_report(peaks=[20 * GIB, 21 * GIB])
    html = admin_client.get(WORKERS).content.decode()
    assert "dit int8, t5 none; rank 0 26.50 GiB, rank 1 26.50 GiB; last job peak 21.00 GiB" in html
    assert "last job peak 21.00 GiB" in admin_client.get(f"{WORKERS}{worker.pk}/change/").content.decode()
    assert selectors.worker_summary()["workers"][0]["memory"]["last_job_peak_bytes"] == [20 * GIB, 21 * GIB]
