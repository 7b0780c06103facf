"""The daemon through a database outage (issue 8, item 3): progress and heartbeats are skipped, a
job's outcome waits for the database and is then written, and a daemon whose supervisor died
stops waiting and gives its job back. The real outage runs in test_supervisor_faults."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from django.db import OperationalError

from inference.daemon import database
from inference.daemon.active import ActiveJob
from inference.daemon.config import DaemonConfig
from inference.daemon.main import Daemon
from inference.daemon.stop import _watched_parents
from inference.devices import resolve_device
from inference.parallel.context import ParallelContext
from inference.runtime import Runtime, StopFlag
from videojobs import services


def make_daemon(tmp_path: Path) -> Daemon:
    config = DaemonConfig(
        worker_name="t", ckpt_dir=tmp_path, tiny_model=True, output_dir=tmp_path, media_root=tmp_path,
        lease_seconds=30, poll_seconds=1, idle_tick_seconds=1, task_timeout=60, fps=16,
    )
    runtime = Runtime(rank=0, world_size=1, local_rank=0, device=resolve_device("cpu"))
    return Daemon(runtime, config, ParallelContext.single(resolve_device("cpu")))


class Flaky:
    """A database call that fails ``failures`` times, then answers."""

    def __init__(self, failures: int, answer=True) -> None:
        self.failures, self.answer, self.calls = failures, answer, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("server closed the connection unexpectedly")
        return self.answer


@pytest.fixture
def no_waiting(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(database.time, "sleep", waits.append)
    return waits


def test_a_jobs_outcome_waits_for_the_database_and_is_then_written(tmp_path, no_waiting):
    daemon = make_daemon(tmp_path)
    write = Flaky(failures=5)
    assert daemon.db("completion", write, retry=True) is True
    assert write.calls == 6
    # Backing off, but never longer than 10 s between tries.
    assert no_waiting == sorted(no_waiting) and max(no_waiting) <= 10


def test_progress_is_skipped_while_the_database_is_away(tmp_path, no_waiting):
    daemon = make_daemon(tmp_path)
    write = Flaky(failures=1)
    # None, not False: False would mean the job is no longer ours and stop it.
    assert daemon.db("progress", write) is None
    assert write.calls == 1 and no_waiting == []


def test_a_cancel_check_without_the_database_lets_the_job_go_on(tmp_path, no_waiting, monkeypatch):
    daemon = make_daemon(tmp_path)
    monkeypatch.setattr(services, "is_cancel_requested", lambda **kwargs: Flaky(failures=1)())
    active = ActiveJob(job_id=1, attempt=1, request_id="r", deadline=10**12)
    assert daemon.gate.leader_decision(active) == StopFlag.CONTINUE


def _dead_process() -> psutil.Process:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    process = psutil.Process(child.pid)
    child.wait()
    return process


def test_a_daemon_whose_supervisor_died_gives_its_job_back_and_stops_waiting(tmp_path, no_waiting):
    daemon = make_daemon(tmp_path)
    assert not daemon.stop.orphaned()
    daemon.stop.parents.append(_dead_process())
    assert daemon.stop.orphaned()
    active = ActiveJob(job_id=1, attempt=1, request_id="r", deadline=10**12)
    assert daemon.gate.leader_decision(active) == StopFlag.SHUTDOWN
    # Its embedded database went with the supervisor: no endless wait for an outcome write.
    write = Flaky(failures=10**6)
    assert daemon.db("release", write, retry=True) is None
    assert write.calls == 1


def test_the_daemon_watches_the_supervisor_through_torchrun(settings):
    settings.SUPERVISOR_PID = os.getppid()
    assert {parent.pid for parent in _watched_parents()} == {os.getppid()}
    grandparent = psutil.Process(os.getppid()).ppid()
    settings.SUPERVISOR_PID = grandparent
    assert {parent.pid for parent in _watched_parents()} == {os.getppid(), grandparent} - {0, 1}
