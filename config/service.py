"""`make run`: the whole service in the foreground (web, django-q2 cluster, inference daemon).

A small supervisor: it prepares the database, starts the three processes in their own
sessions (so a Ctrl-C reaches only the supervisor, which then stops them in order),
restarts any that exits unexpectedly (the daemon exits non-zero by design when its
process group breaks), and on Ctrl-C/SIGTERM drains the daemon, stops the rest and the
embedded Postgres.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil
from django.conf import settings
from django.core.management import call_command

logger = logging.getLogger("service")

SHUTDOWN_GRACE_SECONDS = 30


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0


def child_commands() -> list[Child]:
    python = sys.executable
    manage = str(settings.BASE_DIR / "manage.py")
    nproc = settings.INFERENCE_NPROC
    if nproc > 1:
        daemon = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", manage, "run_inference_daemon"]
    else:
        daemon = [python, manage, "run_inference_daemon"]
    bind = f"{settings.SERVER_HOST}:{settings.SERVER_PORT}"
    return [
        Child("web", [python, "-m", "gunicorn", "config.wsgi:application", "--bind", bind,
                      "--workers", str(settings.WEB_WORKERS), "--access-logfile", "-", "--graceful-timeout", "10"]),
        Child("qcluster", [python, manage, "qcluster"]),
        Child("inference", daemon),
    ]


def prepare() -> None:
    """Schema, static files and the periodic sweeps, before anything serves."""
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    from videojobs.schedules import ensure_schedules

    ensure_schedules()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The children use the server this process resolved (the embedded one included).
    env["DATABASE_URL"] = settings.DATABASE_URL
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run() -> int:
    prepare()
    children = child_commands()
    env = child_env()
    stop_requests = 0

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stop_requests
        stop_requests += 1

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    logger.info("serving on http://%s:%s (docs at /docs); Ctrl-C stops everything", settings.SERVER_HOST, settings.SERVER_PORT)
    if not settings.MODEL_CKPT_DIR:
        logger.warning("MODEL_CKPT_DIR is unset: the daemon runs the tiny random-weight model, which produces noise")
    try:
        while not stop_requests:
            now = time.monotonic()
            for child in children:
                if child.process is None and now >= child.next_start:
                    child.process = subprocess.Popen(child.argv, env=env, cwd=settings.BASE_DIR, start_new_session=True)
                    child.started_at = now
                elif child.process is not None and child.process.poll() is not None:
                    code = child.process.returncode
                    # Back off when a process keeps dying right after its start.
                    child.restarts = child.restarts + 1 if now - child.started_at < 60 else 1
                    delay = min(2 ** child.restarts, 60)
                    logger.error("%s exited with %s; restarting in %d s", child.name, code, delay)
                    child.process = None
                    child.next_start = now + delay
            time.sleep(0.2)
    finally:
        shutdown(children, lambda: stop_requests)
        if settings.EMBEDDED_DB:
            from config.embedded_db import stop_embedded_database

            stop_embedded_database(settings.EMBEDDED_DB_DIR)
    return 0


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def shutdown(children: list[Child], stop_requests) -> None:
    """Drain the daemon (finish its job) and stop the rest; a second Ctrl-C hurries it."""
    first = stop_requests()
    alive = [c for c in children if c.process is not None and c.process.poll() is None]
    descendants = [d for c in alive for d in _descendants(c.process.pid)]
    # SIGTERM: gunicorn and qcluster stop gracefully, the daemon finishes its current job.
    for child in alive:
        child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    escalated = False
    while any(c.process.poll() is None for c in alive):
        if not escalated and (stop_requests() > first or time.monotonic() > deadline):
            # The daemon's second signal gives its running job back to the queue.
            logger.warning("stopping now: a running job goes back to the queue")
            for child in alive:
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGINT)
            escalated = True
            deadline = time.monotonic() + 15
        elif escalated and time.monotonic() > deadline:
            for child in alive:
                if child.process.poll() is None:
                    os.killpg(child.process.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    # torchrun starts each rank in a session of its own; none may outlive the supervisor.
    _, stragglers = psutil.wait_procs(descendants, timeout=5)
    for process in stragglers:
        process.kill()
