"""The sweep that ends queued jobs whose LoRA adapters no worker holds (a daemon restarted with
another LORA_DIR): after LORA_WAIT_SECONDS, and only while some worker has loaded to judge by."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import make_ready_job
from videojobs import services
from videojobs.errors import ErrorCode
from videojobs.models import JobStatus, VideoJob
from videojobs.schedules import sweep_definitions

pytestmark = pytest.mark.django_db

ENTRY = {"format": "wan", "rank": 4, "size_bytes": 1, "sha256": "0" * 12, "memory_bytes": 1}


def _worker(name: str, loras: list[str], state: str = "idle") -> None:
    services.register_worker(name=name, host="h", pid=1, world_size=1, topology={}, device="cpu", model="tiny")
    services.update_worker(name=name, state=state, loras=[{"name": lora, **ENTRY} for lora in loras])


def _waiting_job(loras: list[str], *, minutes: int = 20) -> VideoJob:
    """A job admitted while some worker held ``loras`` (set here directly: the workers of the test
    hold what they hold after their restart), ready for ``minutes``."""
    job = make_ready_job()
    VideoJob.objects.filter(pk=job.pk).update(
        params={**job.params, "loras": [{"name": name, "scale": 1.0} for name in loras]},
        input_ready_at=timezone.now() - timedelta(minutes=minutes))
    return job


def _ended(job: VideoJob) -> VideoJob:
    job.refresh_from_db()
    return job


def test_a_job_whose_adapter_no_loaded_worker_holds_fails_naming_it(settings) -> None:
    settings.LORA_WAIT_SECONDS = 900
    _worker("w1", ["style"])
    job = _waiting_job(["distill"])
    assert services.fail_jobs_without_lora_holder() == 1
    job = _ended(job)
    assert (job.status, job.error_code) == (JobStatus.FAILED, ErrorCode.LORA_UNAVAILABLE)
    assert "distill" in job.reason and "held now: style" in job.reason
    assert job.events.filter(kind="failed").exists()


def test_adapters_split_over_two_workers_are_not_held_by_either(settings) -> None:
    _worker("w1", ["style"])
    _worker("w2", ["distill"])
    both = _waiting_job(["distill", "style"])
    one = _waiting_job(["distill"])
    assert services.fail_jobs_without_lora_holder() == 1
    assert _ended(both).status == JobStatus.FAILED and _ended(one).status == JobStatus.IN_QUEUE


@pytest.mark.parametrize("situation", ["held by a loading worker", "no worker loaded", "waited too little",
                                       "without adapters"])
def test_jobs_that_may_still_run_keep_waiting(settings, situation) -> None:
    settings.LORA_WAIT_SECONDS = 900
    if situation == "held by a loading worker":
        _worker("w1", ["style"])
        _worker("w2", ["distill"], state="loading")  # restarting: its row still lists what it held
    elif situation == "no worker loaded":
        _worker("w1", ["style"], state="stopped")
        _worker("w2", [], state="loading")
    else:
        _worker("w1", ["style"])
    job = (_waiting_job(["distill"], minutes=5) if situation == "waited too little"
           else _waiting_job([]) if situation == "without adapters" else _waiting_job(["distill"]))
    assert services.fail_jobs_without_lora_holder() == 0
    assert _ended(job).status == JobStatus.IN_QUEUE


def test_the_sweep_is_scheduled_every_minute() -> None:
    assert sweep_definitions()["videojobs.tasks.fail_jobs_without_lora_holder"] == 1
