"""The daemon with LORA_DIR: its row reports the adapters it loaded, and a LoRA job runs end to end."""
from __future__ import annotations

import pytest

from tests.daemon_support import daemon_argv, finished, ready_small_job, running, service_env, wait_for
from tests.lora_support import random_deltas, write_lora
from videojobs import selectors
from videojobs.models import InferenceWorker, JobStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_the_daemon_reports_its_adapters_and_runs_a_lora_job(settings, tiny_ckpt, tmp_path):  # noqa: F811
    settings.MAX_CONCURRENT_TASKS = 50
    write_lora(tmp_path / "loras", "style.v1", random_deltas(tiny_ckpt, seed=6), "kohya")
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt, LORA_DIR=tmp_path / "loras", WORKER_NAME="lora-worker"), log):
        worker = wait_for(lambda: InferenceWorker.objects.filter(name="lora-worker", state="idle").first(),
                          timeout=120, what="the worker to load", log=log)
        (held,) = worker.loras
        assert (held["name"], held["format"], held["rank"]) == ("style.v1", "kohya", 2)
        assert held["memory_bytes"] > 0 and len(held["sha256"]) == 12
        with_lora = ready_small_job(loras=[{"name": "style.v1", "scale": 0.5}])
        without = ready_small_job()
        done = wait_for(lambda: finished(with_lora.pk), timeout=120, what="the LoRA job", log=log)
        plain = wait_for(lambda: finished(without.pk), timeout=120, what="the plain job", log=log)
    assert done.status == JobStatus.SUCCEED, done.reason
    document = selectors.status_document(job=done)
    assert document["loras"] == [{"name": "style.v1", "scale": 0.5}]
    assert document["results"]["acceleration"]["loras"] == [{"name": "style.v1", "scale": 0.5}]
    assert plain.status == JobStatus.SUCCEED, plain.reason
    assert selectors.status_document(job=plain)["results"]["acceleration"]["loras"] == []
    assert "LoRA style.v1 (kohya, rank 2)" in log.read_text()
