"""Honest worker state: dead daemons are found out and their jobs rescued at once (issue 8, item 5)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import make_ready_job
from videojobs import selectors, services
from videojobs.models import InferenceWorker, JobStatus, VideoJob, WorkerState

pytestmark = pytest.mark.django_db


def worker(name: str, *, host: str = "h", pid: int = 100, state: str = "busy", age: float = 0.0) -> InferenceWorker:
    row = services.register_worker(name=name, host=host, pid=pid, world_size=1, topology={}, device="cpu", model="m")
    InferenceWorker.objects.filter(pk=row.pk).update(state=state, heartbeat_at=timezone.now() - timedelta(seconds=age))
    return row


def running_job(worker_name: str, *, attempt: int = 1, max_attempts: int = 3) -> VideoJob:
    job = make_ready_job()
    VideoJob.objects.filter(pk=job.pk).update(
        status=JobStatus.IN_PROGRESS, worker=worker_name, attempt=attempt, max_attempts=max_attempts,
        lease_until=timezone.now() + timedelta(hours=1), started_at=timezone.now(),
    )
    return VideoJob.objects.get(pk=job.pk)


def test_a_starting_daemon_retires_its_dead_predecessors_and_rescues_their_jobs_at_once():
    worker("h:100", pid=100)
    worker("h:200", pid=200)  # alive
    worker("other:100", host="other", pid=100)  # another host: not ours to judge
    requeued, exhausted, alive_job = running_job("h:100"), running_job("h:100", attempt=3), running_job("h:200")
    report = services.retire_dead_predecessors(name="h:300", host="h", pid=300, alive=lambda pid: pid == 200)
    states = dict(InferenceWorker.objects.values_list("name", "state"))
    assert states == {"h:100": "lost", "h:200": "busy", "other:100": "busy"}
    assert (report.requeued, report.failed) == (1, 1)
    requeued.refresh_from_db(), exhausted.refresh_from_db(), alive_job.refresh_from_db()
    # Rescued though its lease has an hour left; the attempt its worker took stays counted.
    assert (requeued.status, requeued.attempt) == (JobStatus.IN_QUEUE, 1)
    assert (exhausted.status, exhausted.error_code) == (JobStatus.FAILED, "WORKER_LOST")
    assert alive_job.status == JobStatus.IN_PROGRESS


def test_a_daemon_restarted_under_the_same_name_rescues_the_job_it_was_running():
    worker("gpu-a", pid=100)
    job = running_job("gpu-a")
    services.retire_dead_predecessors(name="gpu-a", host="h", pid=300, alive=lambda pid: False)
    job.refresh_from_db()
    assert job.status == JobStatus.IN_QUEUE


def test_the_sweep_marks_silent_workers_lost_and_rescues_their_jobs(settings):
    settings.WORKER_LOST_SECONDS = 60
    worker("h:1", age=120)
    worker("h:2", age=5)
    worker("h:3", state="loading", age=300)
    job = running_job("h:1")
    report = services.mark_lost_workers()
    assert dict(InferenceWorker.objects.values_list("name", "state")) == {"h:1": "lost", "h:2": "busy", "h:3": "lost"}
    assert report.requeued == 1
    job.refresh_from_db()
    assert job.status == JobStatus.IN_QUEUE


def test_health_counts_only_live_workers():
    worker("h:1", state=WorkerState.LOST)
    worker("h:2", state="idle")
    summary = selectors.worker_summary()
    assert summary["ready"] == 1
    assert {w["name"]: w["state"] for w in summary["workers"]} == {"h:1": "lost", "h:2": "idle"}
