"""Rank 0's calls to the database: best effort (progress, heartbeats), or retried until they
land (a job's outcome), so that a Postgres restart costs the job nothing."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from django.db import Error as DatabaseFailure
from django.db import connection

from inference.daemon.stop import StopRequests

logger = logging.getLogger("inference.daemon")  # the daemon's one logger name, in every module of it


class DatabaseCalls:
    def __init__(self, stop: StopRequests) -> None:
        self.stop = stop

    def __call__(self, what: str, call: Callable[[], Any], *, retry: bool = False) -> Any:
        """One database call of rank 0. Best effort by default (progress, heartbeats: the next one
        comes soon; returns None when the database is away); with retry, until it lands (a job's
        outcome), so a Postgres restart costs the job nothing."""
        delay = 0.5
        while True:
            try:
                return call()
            except DatabaseFailure as exc:
                connection.close()  # a broken connection is replaced on the next call
                if not retry or self.stop.orphaned() or (self.stop.aborting and delay >= 10):
                    logger.warning("%s skipped: the database is unreachable (%s)", what, exc)
                    return None
                logger.warning("%s waits for the database (%s); retrying in %.1f s", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
