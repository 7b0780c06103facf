"""Helpers of the /v1 tests: API keys, a real mp4 for a finished job, an upload."""
from __future__ import annotations

import io
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from django.conf import settings
from django.utils import timezone
from rest_framework_api_key.models import APIKey

from tests.conftest import png_bytes
from videojobs.models import JobPhase, JobStatus, VideoJob

PROMPT = "A red kite over a green hill at dawn"


def new_key(name: str = "client") -> str:
    _, key = APIKey.objects.create_key(name=name)
    return key


def owner_of_key(key: str) -> str:
    return f"key:{key.split('.')[0]}"


def png_file(name: str = "first.png", width: int = 64, height: int = 64) -> io.BytesIO:
    stream = io.BytesIO(png_bytes(width, height))
    stream.name = name
    return stream


def write_mp4(path: Path, *, frames: int = 25, width: int = 64, height: int = 64, fps: int = 16) -> Path:
    """A real H.264 mp4: frame i is a flat grey of level 8*i (so frames can be told apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1,
                                ffmpeg_log_level="error")
    try:
        for i in range(frames):
            writer.append_data(np.full((height, width, 3), (8 * i) % 256, dtype=np.uint8))
    finally:
        writer.close()
    return path


def finish_with_video(job: VideoJob, *, frames: int = 25) -> Path:
    """Mark ``job`` Succeed with a real video, as the daemon leaves a job it completed."""
    video = write_mp4(Path(settings.OUTPUT_DIR) / f"{job.request_id}.mp4", frames=frames)
    now = timezone.now()
    VideoJob.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEED, phase=JobPhase.DONE, finished_at=now, started_at=now,
        result={"video_file": video.name, "frames": frames, "fps": 16, "resolution": "64*64", "seed": 11})
    job.refresh_from_db()
    return video
