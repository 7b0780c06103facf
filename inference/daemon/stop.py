"""When the daemon must stop: a stop signal (finish the job, then exit; a second one gives the
job back now), or the supervisor that started it gone (give the job back and exit now)."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

import psutil
from django.conf import settings

logger = logging.getLogger("inference.daemon")  # the daemon's one logger name, in every module of it

# The same signal again sooner than this after the first stop is that stop arriving twice.
STOP_SIGNAL_DEBOUNCE_SECONDS = 1.0


def _watched_parents() -> list[psutil.Process]:
    """Our parent, and `make run`'s supervisor when it started us (through torchrun or not).
    is_running() compares start times, so a recycled pid does not pass for a live parent."""
    parents = []
    for pid in {os.getppid(), settings.SUPERVISOR_PID} - {0, 1}:
        with contextlib.suppress(psutil.Error):
            parents.append(psutil.Process(pid))
    return parents


class StopRequests:
    """Rank 0's reasons to stop. ``stopping``: finish the current job, then exit; ``aborting``:
    give the current job back now; ``orphaned()``: nobody will collect the job, exit now."""

    def __init__(self, *, is_leader: bool) -> None:
        self.is_leader = is_leader
        self.stopping = False  # first SIGTERM/SIGINT: finish the current job, then exit
        self.aborting = False  # second signal: give the current job back now
        self.parents = _watched_parents()

    def orphaned(self) -> bool:
        """The supervisor (or torchrun) that started us is gone: give the job back and exit now,
        instead of holding the accelerator for a job nobody will collect."""
        return not all(parent.is_running() for parent in self.parents)

    def install_signal_handlers(self) -> None:
        first: list[tuple[int, float]] = []

        def handle(signum, frame):  # noqa: ARG001
            if not self.is_leader:
                return  # followers obey rank 0's broadcast, never their own signal
            if first and first[0][0] == signum and time.monotonic() - first[0][1] < STOP_SIGNAL_DEBOUNCE_SECONDS:
                # One stop delivered twice: systemd's KillMode=control-group signals every
                # process of the unit, and torchrun passes the signal it got on to the ranks.
                return
            if self.stopping:
                self.aborting = True
                logger.warning("second stop signal: giving the current job back to the queue")
            else:
                self.stopping = True
                first.append((signum, time.monotonic()))
                logger.warning("stop signal: finishing the current job, then exiting")

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
