"""Per-job overhead of the inference daemon outside the DiT, on the tiny model (CPU).

Runs a real daemon process against a scratch database (videogen_bench on the configured or
embedded Postgres), feeds it jobs one at a time while it sits idle in LISTEN, and prints:
- pickup latency: input marked ready (NOTIFY) -> job claimed by the idle daemon;
- the job's own phases as the daemon timed them (encoding: text, image and the VAE encode of
  the condition frames; denoising; VAE
  decode, mp4 writing);
- daemon overhead: wall time of the attempt minus the sum of its phases (claim hand-off,
  broadcasts, per-step progress writes and cancel checks, completion);
- the cost of one progress write + cancel check, measured directly.

Usage: make bench   (or .venv/bin/python bench/daemon_overhead.py --jobs 5 --steps 20)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import embedded_db  # noqa: E402


def scratch_database_url() -> str:
    import psycopg

    # DATABASE_URL unset: the embedded Postgres of var/pgdata, started here unless it runs.
    base = os.environ.get("DATABASE_URL") or embedded_db.ensure_running(ROOT / "var" / "pgdata")
    with psycopg.connect(base, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'videogen_bench'").fetchone():
            conn.execute("CREATE DATABASE videogen_bench")
    return urlsplit(base)._replace(path="/videogen_bench").geturl()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", default="64*64")
    parser.add_argument("--frames", type=int, default=25)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="videogen-bench-"))
    os.environ.update(
        {
            "DATABASE_URL": scratch_database_url(),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "OUTPUT_DIR": str(work / "videos"),
            "MEDIA_ROOT": str(work / "media"),
            "EXTRA_IMAGE_SIZES": args.size,
            "DEVICE": "cpu",
            "DAEMON_IDLE_TICK_SECONDS": "5",
            "DAEMON_POLL_SECONDS": "2",
            "MAX_CONCURRENT_TASKS": "1000",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command
    from PIL import Image

    from videojobs import services
    from videojobs.models import VideoJob

    call_command("migrate", verbosity=0)
    ckpt = work / "tiny"
    call_command("create_tiny_checkpoint", str(ckpt), verbosity=0)
    env = {**os.environ, "MODEL_CKPT_DIR": str(ckpt), "WORKER_NAME": "bench"}
    daemon = subprocess.Popen(
        [sys.executable, "manage.py", "run_inference_daemon", "--max-jobs", str(args.jobs + 1)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    params = {"image_size": args.size, "num_frames": args.frames, "infer_steps": args.steps, "guidance_scale": 3.0,
              "sample_solver": "unipc", "sample_shift": 5.0, "seed": 1}
    rows = []
    try:
        for index in range(args.jobs + 1):  # the first job warms up the kernels; not reported
            job, _ = services.submit_job(prompt="a benchmark prompt", image_url="https://example.com/x.png", params=params)
            path = Path(os.environ["MEDIA_ROOT"]) / "inputs" / f"{job.request_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (96, 64), (10, 200, 30)).save(path)
            time.sleep(1.0)  # let the daemon settle into its idle LISTEN wait
            services.mark_input_ready(job_id=job.pk, image_path=f"inputs/{job.request_id}.png", sha256="0" * 64)
            while True:
                job = VideoJob.objects.get(pk=job.pk)
                if job.status in ("Succeed", "Failed", "Cancelled"):
                    break
                if daemon.poll() is not None:
                    raise SystemExit(f"the daemon exited with {daemon.returncode}")
                time.sleep(0.05)
            if job.status != "Succeed":
                raise SystemExit(f"job failed: {job.reason}")
            if index == 0:
                continue
            phases = job.timings
            wall = (job.finished_at - job.started_at).total_seconds()
            rows.append(
                {
                    "pickup": (job.started_at - job.input_ready_at).total_seconds(),
                    "encoding": phases["encoding"],
                    "denoising": phases["denoising"],
                    "decoding": phases["decoding"],
                    "saving": phases["saving"],
                    "overhead": wall - sum(phases.values()),
                    "wall": wall,
                }
            )
        # One progress write + one cancel check, as rank 0 does after every step.
        claimed_like = VideoJob.objects.filter(status="Succeed").first()
        VideoJob.objects.filter(pk=claimed_like.pk).update(status="InProgress")
        started = time.perf_counter()
        n = 200
        for step in range(n):
            services.report_progress(job_id=claimed_like.pk, attempt=claimed_like.attempt, phase="denoising", step=step, total_steps=n)
            services.is_cancel_requested(job_id=claimed_like.pk)
        per_step_db = (time.perf_counter() - started) / n
        VideoJob.objects.filter(pk=claimed_like.pk).update(status="Succeed")
    finally:
        if daemon.poll() is None:
            daemon.terminate()
        daemon.wait(timeout=60)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"tiny model, {args.size}, {args.frames} frames, {args.steps} steps, CPU; median of {len(rows)} jobs")
    print(f"{'what':<46}{'seconds':>10}")
    for label, key in [
        ("pickup: input ready -> claimed (idle daemon)", "pickup"),
        ("encoding (text, image, VAE condition)", "encoding"),
        ("denoising", "denoising"),
        ("VAE decode", "decoding"),
        ("mp4 writing", "saving"),
        ("daemon overhead (wall - phases)", "overhead"),
        ("attempt wall time", "wall"),
    ]:
        print(f"{label:<46}{med(key):>10.3f}")
    print(f"{'one progress write + cancel check (per step)':<46}{per_step_db:>10.4f}")
    print(f"{'  x steps (included in denoising)':<46}{per_step_db * args.steps:>10.3f}")


if __name__ == "__main__":
    main()
