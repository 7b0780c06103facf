"""What the admin's tests share: the admin's URLs, and jobs in every state, made through the services."""
from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import make_job, make_ready_job, png_bytes
from videojobs import services
from videojobs.models import (
    JobPhase,
    VideoJob,
)

JOBS = "/admin/videojobs/videojob/"
WORKERS = "/admin/videojobs/inferenceworker/"
DELIVERIES = "/admin/videojobs/webhookdelivery/"
# The note that videojobs/static/videojobs/admin.js reloads the page by.
RELOAD = 'data-refresh-seconds="3"'

TOPOLOGY = {"world_size": 4, "ulysses_size": 2, "ring_size": 1, "cfg_size": 2, "dit_fsdp": True, "t5_fsdp": False,
            "t5_cpu": False, "vae_parallel": False, "device": "cuda", "attention_backend": "flash"}
ACCELERATION = {"cache": {"method": "attention", "reused_steps_per_pass": 6, "reused": {"cond": 240, "uncond": 240},
                          "computed": {"cond": 560, "uncond": 560}},
                "attention_backend": "flash", "prompt_cache_hits": 1}


def cells(html: str, column: str) -> list[str]:
    """The texts of a read-only inline's column on a change page, in order."""
    return re.findall(rf'<td class="field-{column}">\s*<p>(.*?)</p>', html, flags=re.DOTALL)


# --- jobs in every state, made through the services ---------------------------------------


def ready_with_stored_input(settings, **fields) -> VideoJob:
    """A queued job whose input image is on disk, as prepare_input leaves it."""
    job = make_ready_job(**fields)
    stored = Path(settings.MEDIA_ROOT) / job.input_image
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(png_bytes(color=(10, 200, 10)))
    return job


def claim(job: VideoJob, worker: str = "w1") -> VideoJob:
    claimed = services.claim_next_job(worker=worker)
    assert claimed.pk == job.pk
    return claimed


def running_job(settings, worker: str = "w1", **fields) -> VideoJob:
    job = claim(ready_with_stored_input(settings, **fields), worker)
    services.report_progress(job_id=job.pk, attempt=job.attempt, phase=JobPhase.DENOISING, step=5, total_steps=20)
    return VideoJob.objects.get(pk=job.pk)


def succeeded_job(settings, worker: str = "w1", **fields) -> VideoJob:
    job = running_job(settings, worker, **fields)
    folder = Path(settings.OUTPUT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job.request_id}.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"\0" * 64)
    result = {"video_path": f"generated_videos/{job.request_id}.mp4", "video_file": f"{job.request_id}.mp4",
              "frames": 25, "fps": 16, "resolution": "64*64", "seed": 7, "topology": TOPOLOGY,
              "acceleration": ACCELERATION, "warnings": ["requested cfg_size=1; this worker runs cfg_size=2"]}
    timings = {"encoding": 1.5, "denoising": 10.0, "decoding": 2.25, "saving": 0.25}
    assert services.complete_job(job_id=job.pk, attempt=job.attempt, result=result, timings=timings)
    return VideoJob.objects.get(pk=job.pk)


def failed_job(settings, **fields) -> VideoJob:
    job = running_job(settings, **fields)
    services.fail_job(job_id=job.pk, attempt=job.attempt, code="INFERENCE_ERROR", reason="CUDA out of memory",
                      timings={"encoding": 1.0})
    return VideoJob.objects.get(pk=job.pk)


def input_failed_job(settings) -> VideoJob:
    job = make_job()
    services.fail_input(job_id=job.pk, code="IMAGE_HTTP_ERROR", reason="the image URL answered 404")
    return VideoJob.objects.get(pk=job.pk)


def cancelled_job(settings) -> VideoJob:
    return services.request_cancel(request_id=make_job().request_id)


def expired_job(settings) -> VideoJob:
    job = succeeded_job(settings)
    assert services.enforce_output_quota(max_bytes=0) == 1
    return VideoJob.objects.get(pk=job.pk)


STATES = {
    "queued, preparing its input": lambda settings: make_job(),
    "queued, waiting for a worker": ready_with_stored_input,
    "running": running_job,
    "succeeded": succeeded_job,
    "failed while running": failed_job,
    "failed on its input": input_failed_job,
    "cancelled": cancelled_job,
    "succeeded, video expired": expired_job,
}
