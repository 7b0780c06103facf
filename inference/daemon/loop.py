"""The serving loop: rank 0 waits for work and claims a job, every rank receives what comes next
(a job, an idle tick, or shutdown) on the control channel, and all run the job together."""
from __future__ import annotations

import logging
import random
import time
from typing import Any

from django.db import Error as DatabaseFailure
from django.db import close_old_connections, connection

from inference.daemon.config import DaemonConfig
from inference.daemon.database import DatabaseCalls
from inference.daemon.job import JobRunner
from inference.daemon.listen import ReadyListener
from inference.daemon.stop import StopRequests
from inference.runtime import Runtime, broadcast_message
from inference.video import output_problem
from videojobs import services
from videojobs.errors import ErrorCode

logger = logging.getLogger("inference.daemon")  # the daemon's one logger name, in every module of it


class JobLoop:
    def __init__(self, runtime: Runtime, config: DaemonConfig, *, stop: StopRequests, db: DatabaseCalls,
                 listener: ReadyListener, runner: JobRunner) -> None:
        self.runtime = runtime
        self.config = config
        self.stop = stop
        self.db = db
        self.listener = listener
        self.runner = runner
        self.jobs_done = 0

    def run(self) -> None:
        """Every rank: until rank 0 says shutdown."""
        while True:
            message = self._next_message() if self.runtime.is_leader else None
            message = broadcast_message(self.runtime, message)
            if message["kind"] == "shutdown":
                return
            if message["kind"] == "job":
                self.runner.run(message)
                self.jobs_done += 1

    def _next_message(self) -> dict[str, Any]:
        """Rank 0: a job, an idle tick, or shutdown; never waits past the idle tick."""
        deadline = time.monotonic() + self.config.idle_tick_seconds
        while True:
            done = self.config.max_jobs is not None and self.jobs_done >= self.config.max_jobs
            if self.stop.stopping or self.stop.orphaned() or done:
                return {"kind": "shutdown"}
            close_old_connections()
            try:
                job = services.claim_next_job(worker=self.config.worker_name, lease_seconds=self.config.lease_seconds)
            except DatabaseFailure as exc:
                # Postgres restarting: keep the followers ticking and try again next tick.
                connection.close()
                logger.warning("claim failed, the database is unreachable (%s); retrying", exc)
                time.sleep(min(self.config.poll_seconds, max(deadline - time.monotonic(), 0)))
                return {"kind": "idle"}
            if job is not None:
                message = self._job_message_or_fail(job)
                if message is not None:
                    return message
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.db("worker heartbeat", lambda: services.worker_heartbeat(name=self.config.worker_name))
                return {"kind": "idle"}
            self.listener.wait(min(remaining, self.config.poll_seconds))

    def _job_message_or_fail(self, job) -> dict[str, Any] | None:
        """The claimed job's message, or None once the job has failed because it cannot run here."""
        # A disk that cannot take the video fails the job now, not after its inference.
        problem = output_problem(self.config.output_dir, min_free_bytes=self.config.min_free_bytes)
        if problem is not None:
            self.db("failure", lambda: services.fail_job(
                job_id=job.pk, attempt=job.attempt, code=problem[0], reason=problem[1]), retry=True)
            return None
        try:
            return self._job_message(job)
        except OSError as exc:
            reason = f"the stored input image could not be read ({type(exc).__name__}); submit the job again"
            self.db("failure", lambda: services.fail_job(
                job_id=job.pk, attempt=job.attempt, code=ErrorCode.INPUT_MISSING, reason=reason), retry=True)
            return None

    def _job_message(self, job) -> dict[str, Any]:
        image_png = (self.config.media_root / job.input_image).read_bytes()
        seed = job.params.get("seed")
        if seed is None:
            # The seed that actually ran is reported, so any video can be reproduced.
            seed = random.SystemRandom().randint(0, 2**31 - 1)
        return {
            "kind": "job",
            "job_id": job.pk,
            "attempt": job.attempt,
            "request_id": job.request_id,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "params": job.params,
            "seed": seed,
            "image_png": image_png,
            "deadline": job.started_at.timestamp() + self.config.task_timeout,
        }
