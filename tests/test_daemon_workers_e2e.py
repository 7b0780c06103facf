"""Killed daemons, for real: found dead by their successor, their jobs rescued without waiting for
the lease; a job that kills its daemon every time ends after its attempts (issue 8, item 5)."""
from __future__ import annotations

import os
import signal

import pytest

from tests.daemon_support import daemon_argv, finished, job_state, running, service_env, wait_for
from tests.test_daemon_e2e import ready_job  # noqa: F401
from videojobs import selectors
from videojobs.models import InferenceWorker, JobStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# A lease far longer than the test: only the successor's check can explain a fast rescue.
LONG_LEASE = {"LEASE_SECONDS": 600}


def _kill_when(daemon, predicate, log, what: str) -> None:
    wait_for(predicate, timeout=120, what=what, log=log)
    os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait()


def test_a_killed_daemons_job_is_rescued_by_its_successor_at_once(ready_job, tiny_ckpt, tmp_path):  # noqa: F811
    job = ready_job(infer_steps=40)
    env = service_env(tiny_ckpt, **LONG_LEASE)
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    with running(daemon_argv(), env, first) as daemon:
        _kill_when(daemon, lambda: job_state(job.pk).progress_step >= 2, first, "step 2")
    dead = InferenceWorker.objects.get()
    assert dead.state == "busy"  # what a hard kill leaves behind
    with running(daemon_argv(), env, second):
        ended = wait_for(lambda: finished(job.pk), timeout=120, what="the rescued job", log=second)
        assert selectors.worker_summary()["ready"] == 1
    assert (ended.status, ended.attempt) == (JobStatus.SUCCEED, 2)
    dead.refresh_from_db()
    assert dead.state == "lost" and "successor" in dead.detail


def test_a_job_that_kills_its_daemon_every_time_fails_after_its_attempts_and_the_next_job_runs(
    ready_job, tiny_ckpt, tmp_path  # noqa: F811
):
    poison = ready_job(infer_steps=100)
    env = service_env(tiny_ckpt, JOB_MAX_ATTEMPTS=3, **LONG_LEASE)
    for attempt in (1, 2, 3):
        log = tmp_path / f"attempt-{attempt}.log"
        with running(daemon_argv(), env, log) as daemon:
            _kill_when(daemon, lambda: job_state(poison.pk).attempt == attempt and job_state(poison.pk).progress_step >= 1,
                       log, f"attempt {attempt} under way")
    after = ready_job()
    log = tmp_path / "last.log"
    with running(daemon_argv(), env, log):
        ended = wait_for(lambda: finished(poison.pk), timeout=60, what="the poison job to end", log=log)
        done = wait_for(lambda: finished(after.pk), timeout=120, what="the next job", log=log)
    assert (ended.status, ended.error_code, ended.attempt) == (JobStatus.FAILED, "WORKER_LOST", 3)
    assert done.status == JobStatus.SUCCEED
    assert InferenceWorker.objects.filter(state="lost").count() == 3
