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
import shlex
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


def daemon_command() -> list[str]:
    """The inference daemon: one process, torchrun on this host, or this host's part of a
    multi-host group (torchrun --nnodes with a fixed rendezvous)."""
    python = sys.executable
    manage = str(settings.BASE_DIR / "manage.py")
    nproc, nnodes = settings.INFERENCE_NPROC, settings.INFERENCE_NNODES
    if nproc == 1 and nnodes == 1:
        return [python, manage, "run_inference_daemon"]
    torchrun = [python, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes == 1:
        torchrun.append("--standalone")
    else:
        torchrun += [f"--nnodes={nnodes}", f"--node_rank={settings.INFERENCE_NODE_RANK}",
                     f"--master_addr={settings.MASTER_ADDR}", f"--master_port={settings.MASTER_PORT}"]
    return [*torchrun, manage, "run_inference_daemon"]


def child_commands() -> list[Child]:
    python = sys.executable
    manage = str(settings.BASE_DIR / "manage.py")
    bind = f"{settings.SERVER_HOST}:{settings.SERVER_PORT}"
    children = {
        "web": Child("web", [python, "-m", "gunicorn", "config.wsgi:application", "--bind", bind,
                             "--workers", str(settings.WEB_WORKERS), "--access-logfile", "-", "--graceful-timeout", "10"]),
        "qcluster": Child("qcluster", [python, manage, "qcluster"]),
        "inference": Child("inference", daemon_command()),
    }
    return [children[role] for role in ("web", "qcluster", "inference") if role in settings.SERVICE_ROLES]


def prepare() -> None:
    """Schema, static files and the periodic sweeps, before anything serves (on the host that
    serves the web; an inference-only host finds them done)."""
    if "web" not in settings.SERVICE_ROLES:
        return
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
    if "web" in settings.SERVICE_ROLES:
        logger.info("serving on http://%s:%s (docs at /docs); Ctrl-C stops everything", settings.SERVER_HOST, settings.SERVER_PORT)
    for child in children:
        logger.info("%s: %s", child.name, shlex.join(child.argv))
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
