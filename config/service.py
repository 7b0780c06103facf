"""`make run`: the whole service in the foreground (web, the two django-q2 clusters, inference
daemon, and the embedded Postgres when DATABASE_URL is unset).

A small supervisor:
- one per data folder: a second one on the same VAR_DIR refuses with one line naming the first
  (an exclusive lock held for the supervisor's life, released by the kernel even on SIGKILL);
- its children die with it: each is started with a parent-death signal, so a SIGKILL of the
  supervisor (or a closed terminal) leaves no orphan, and SIGHUP is handled like SIGTERM;
- the embedded Postgres is its child too, started first, restarted if it dies, stopped last;
- it restarts any other child that exits (the daemon exits non-zero by design when its process
  group breaks), and on Ctrl-C/SIGTERM/SIGHUP drains the daemon, then stops the rest.
The children run in sessions of their own, so a terminal's Ctrl-C reaches only the supervisor.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from django.conf import settings
from django.core.management import call_command

from config.embedded_db import EmbeddedPostgres
from videojobs.schedules import ensure_schedules

logger = logging.getLogger("service")

SHUTDOWN_GRACE_SECONDS = 30


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # over the supervisor's (child_env)
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


def web_command(*, host: str, port: int, workers: int) -> list[str]:
    """gunicorn as the service runs it (bench/api_load.py measures exactly this server)."""
    return [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"{host}:{port}",
            "--workers", str(workers), "--access-logfile", "-", "--graceful-timeout", "10"]


def child_commands() -> list[Child]:
    """The processes of this host's SERVICE_ROLES. The qcluster role is two django-q2 clusters:
    input preparation and the sweeps, and webhook deliveries on their own queue and workers
    (django-q2 takes the cluster's name from Q_CLUSTER_NAME, read before any command line is)."""
    python = sys.executable
    manage = str(settings.BASE_DIR / "manage.py")
    children = {
        "web": [Child("web", web_command(host=settings.SERVER_HOST, port=settings.SERVER_PORT, workers=settings.WEB_WORKERS))],
        "qcluster": [Child("qcluster", [python, manage, "qcluster"]),
                     Child("webhooks", [python, manage, "qcluster"], env={"Q_CLUSTER_NAME": settings.WEBHOOK_CLUSTER})],
        "inference": [Child("inference", daemon_command())],
    }
    return [child for role in ("web", "qcluster", "inference") if role in settings.SERVICE_ROLES for child in children[role]]


def prepare() -> None:
    """Schema, static files and the periodic sweeps, before anything serves (on the host that
    serves the web; an inference-only host finds them done)."""
    if "web" not in settings.SERVICE_ROLES:
        return
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    ensure_schedules()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The children use the server this process resolved (the embedded one included).
    env["DATABASE_URL"] = settings.DATABASE_URL
    env["SERVICE_SUPERVISOR_PID"] = str(os.getpid())
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, parent_pid: int) -> None:
    """In a child between fork and exec: receive ``sig`` when the supervisor dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not Linux: children outlive a killed supervisor there
        return
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), sig)


class AlreadyRunning(RuntimeError):
    pass


def take_lock(var_dir: Path):
    """The supervisor's lock on its data folder, held (open) until it exits."""
    var_dir.mkdir(parents=True, exist_ok=True)
    handle = open(var_dir / ".supervisor.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise AlreadyRunning(f"a supervisor is already running on {var_dir} (pid {holder}); stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _start(child: "Child", env: dict[str, str], now: float) -> None:
    child.process = subprocess.Popen(child.argv, env={**env, **child.env}, cwd=settings.BASE_DIR, start_new_session=True,
                                     preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()))
    child.started_at = now


def _reap(child: "Child", now: float) -> None:
    code = child.process.returncode
    # Back off when a process keeps dying right after its start.
    child.restarts = child.restarts + 1 if now - child.started_at < 60 else 1
    delay = min(2 ** child.restarts, 60)
    logger.error("%s exited with %s; restarting in %d s", child.name, code, delay)
    child.process = None
    child.next_start = now + delay


def _watch_database(database, next_try: list[float]) -> None:
    """The embedded Postgres died: start it again at once (the others retry meanwhile), and
    keep trying every few seconds if it does not come up."""
    if database is None or database.alive() or time.monotonic() < next_try[0]:
        return
    logger.error("the embedded Postgres exited with %s; restarting it", database.process.returncode)
    try:
        database.start(preexec_fn=functools.partial(die_with_parent, signal.SIGINT, os.getpid()))
        logger.info("the embedded Postgres is back")
    except RuntimeError as exc:
        logger.error("%s; trying again in 5 s", exc)
        next_try[0] = time.monotonic() + 5


def run() -> int:
    try:
        lock = take_lock(Path(settings.VAR_DIR))
    except AlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        return 1
    stop_requests = 0

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stop_requests
        stop_requests += 1

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    database = None
    if settings.EMBEDDED_DB:
        # The settings only name it: the supervisor runs it as its child (DATABASE_URL unset).
        database = EmbeddedPostgres(settings.EMBEDDED_DB_DIR)
        # SIGINT: Postgres's fast shutdown, if the supervisor dies without stopping it.
        database.start(preexec_fn=functools.partial(die_with_parent, signal.SIGINT, os.getpid()))
    children: list[Child] = []
    try:
        prepare()
        children = child_commands()
        env = child_env()
        _announce(children)
        next_database_try = [0.0]
        while not stop_requests:
            _watch_database(database, next_database_try)
            now = time.monotonic()
            for child in children:
                if child.process is None and now >= child.next_start:
                    _start(child, env, now)
                elif child.process is not None and child.process.poll() is not None:
                    _reap(child, now)
            time.sleep(0.2)
    finally:
        shutdown(children, lambda: stop_requests)
        if database is not None:
            database.stop()
        lock.close()
    return 0


def _announce(children: list["Child"]) -> None:
    if "web" in settings.SERVICE_ROLES:
        logger.info("serving on http://%s:%s (docs at /docs); Ctrl-C stops everything", settings.SERVER_HOST, settings.SERVER_PORT)
    for child in children:
        logger.info("%s: %s", child.name, shlex.join([f"{k}={v}" for k, v in child.env.items()] + child.argv))
    if not settings.MODEL_CKPT_DIR:
        logger.warning("MODEL_CKPT_DIR is unset: the daemon runs the tiny random-weight model, which produces noise")


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
