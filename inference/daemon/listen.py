"""Rank 0's LISTEN on the ready channel: wakes the claim loop when a job's input is ready.

A separate autocommit connection; without it (Postgres away, or restarted) the loop polls,
and the connection is opened again at most every 10 s. The claim is always the real check.
"""
from __future__ import annotations

import contextlib
import logging
import select
import time

import psycopg
from django.db import connection

from videojobs import services

logger = logging.getLogger("inference.daemon")  # the daemon's one logger name, in every module of it


class ReadyListener:
    def __init__(self, *, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._listen = None
        self._retry_at = 0.0

    def open(self) -> None:
        params = connection.settings_dict
        conninfo = {
            "dbname": params["NAME"],
            "user": params.get("USER") or None,
            "password": params.get("PASSWORD") or None,
            "host": params.get("HOST") or None,
            "port": params.get("PORT") or None,
        }
        conninfo.update(params.get("OPTIONS", {}) or {})
        self._retry_at = time.monotonic() + 10.0
        try:
            self._listen = psycopg.connect(
                autocommit=True, connect_timeout=5, **{k: v for k, v in conninfo.items() if v}
            )
            self._listen.execute(f"LISTEN {services.READY_CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - polling still works without LISTEN
            # Once per outage, not once per poll: the claim loop already says the database is away.
            logger.warning("LISTEN unavailable (%s); polling every %.1f s", exc, self.poll_seconds)
            self._listen = None

    def close(self) -> None:
        if self._listen is not None:
            with contextlib.suppress(Exception):
                self._listen.close()
            self._listen = None

    def wait(self, timeout: float) -> None:
        """Until a NOTIFY arrives or timeout seconds pass."""
        if timeout <= 0:
            return
        if self._listen is None:
            if time.monotonic() >= self._retry_at:
                self.open()  # the database came back: wake on NOTIFY again
            if self._listen is None:
                time.sleep(timeout)
                return
        try:
            # Wake on a NOTIFY, or after the timeout; the claim that follows is the real check.
            ready, _, _ = select.select([self._listen.fileno()], [], [], timeout)
            if ready:
                for _ in self._listen.notifies(timeout=0):
                    pass
        except Exception as exc:  # noqa: BLE001 - a restarted Postgres closes this connection
            logger.warning("LISTEN connection lost (%s); reconnecting", exc)
            self.close()
            self.open()
