"""Rank 0's heartbeat threads: the worker row's while the pipeline loads, and the job's lease
(with the worker row's) while a job runs, since one 720p step or VAE decode can outlast a lease.

Every beat stands on its own: a database that is away for a while skips beats, never ends them.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from django.db import connection

from inference.daemon.active import ActiveJob
from inference.daemon.config import DaemonConfig
from inference.daemon.database import DatabaseCalls
from videojobs import services


@contextlib.contextmanager
def loading_heartbeat(config: DaemonConfig, db: DatabaseCalls, *, is_leader: bool) -> Iterator[None]:
    """Loading a 14B model takes minutes: rank 0 keeps the worker row's heartbeat fresh meanwhile."""
    if not is_leader:
        yield
        return
    done = threading.Event()

    def beat() -> None:
        # Every beat on its own, as the lease heartbeat's: a database outage must not end the beats.
        try:
            while not done.wait(max(config.idle_tick_seconds, 1.0)):
                db("worker heartbeat", lambda: services.worker_heartbeat(name=config.worker_name))
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name="loading-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


def start_lease_heartbeat(config: DaemonConfig, db: DatabaseCalls, active: ActiveJob) -> threading.Event:
    """Rank 0 extends the lease from a thread: a single 720p step or VAE decode can outlast it.
    Marks the worker busy first; setting the returned event ends the beats."""
    done = threading.Event()
    interval = max(config.lease_seconds / 3, 0.5)
    db("worker state", lambda: services.update_worker(
        name=config.worker_name, state="busy", current_job_id=active.job_id))

    def beat() -> None:
        # Every beat on its own: a database that went away for a while must not end the beats.
        try:
            while not done.wait(interval):
                held = db("lease heartbeat", lambda: services.heartbeat(
                    job_id=active.job_id, attempt=active.attempt, lease_seconds=config.lease_seconds))
                if held is False:
                    active.lost.set()
                db("worker heartbeat", lambda: services.worker_heartbeat(name=config.worker_name))
        finally:
            connection.close()

    threading.Thread(target=beat, name=f"heartbeat-{active.request_id}", daemon=True).start()
    return done
