"""Running the real inference daemon (and qcluster) as subprocesses against the test database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psutil
from django.conf import settings
from django.db import connection

from videojobs.models import VideoJob

ROOT = Path(__file__).resolve().parent.parent
# A job the tiny model runs in seconds.
SMALL_JOB = {"image_size": "64*64", "num_frames": 25, "infer_steps": 20, "guidance_scale": 3.0,
             "sample_solver": "unipc", "sample_shift": 5.0, "seed": 3}


def ready_small_job(**params) -> VideoJob:
    """SMALL_JOB (with ``params`` over it) submitted through the service, its input prepared as
    the qcluster task would: an 80x60 PNG stored and the job marked ready for a daemon to claim."""
    from tests.conftest import make_job, png_bytes
    from videojobs import services

    job = make_job(params={**SMALL_JOB, **params})
    target = Path(settings.MEDIA_ROOT) / "inputs" / f"{job.request_id}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png_bytes(80, 60))
    services.mark_input_ready(job_id=job.pk, image_path=f"inputs/{job.request_id}.png", sha256="0" * 64)
    return job


def database_url_for_tests() -> str:
    """DATABASE_URL of this run, pointed at the database pytest-django created (test_<name>)."""
    return urlsplit(settings.DATABASE_URL)._replace(path="/" + connection.settings_dict["NAME"]).geturl()


def service_env(ckpt: Path, **overrides) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url_for_tests(),
            "MODEL_CKPT_DIR": str(ckpt),
            "OUTPUT_DIR": str(settings.OUTPUT_DIR),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "EXTRA_IMAGE_SIZES": ",".join(settings.EXTRA_IMAGE_SIZES),
            "IMAGE_URL_ALLOWED_NETWORKS": ",".join(settings.IMAGE_URL_ALLOWED_NETWORKS),
            "DEVICE": "cpu",
            "LEASE_SECONDS": "30",
            "DAEMON_POLL_SECONDS": "0.2",
            "DAEMON_IDLE_TICK_SECONDS": "1",
            "WORKER_STALE_SECONDS": "30",
            "LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path):
    """A subprocess for the duration of the block, its output in ``log`` for post-mortems."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield process
        finally:
            # torchrun puts each rank in a session of its own: collect them before stopping.
            descendants = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
            if process.poll() is None:
                # Stop, then (another signal: not the same stop delivered twice) give the job back now.
                process.send_signal(signal.SIGTERM)
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            _, alive = psutil.wait_procs(descendants, timeout=10)
            for leftover in alive:
                leftover.kill()


def daemon_argv(nproc: int = 1, max_jobs: int | None = None) -> list[str]:
    extra = ["--max-jobs", str(max_jobs)] if max_jobs else []
    if nproc == 1:
        return [sys.executable, "manage.py", "run_inference_daemon", *extra]
    return [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
        "manage.py", "run_inference_daemon", *extra,
    ]


def wait_for(predicate, *, timeout: float, interval: float = 0.05, what: str = "condition", log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = f"\n--- log ---\n{log.read_text(errors='replace')[-4000:]}" if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


def job_state(pk: int) -> VideoJob:
    return VideoJob.objects.get(pk=pk)


def finished(pk: int):
    job = job_state(pk)
    return job if job.status in ("Succeed", "Failed", "Cancelled") else None
