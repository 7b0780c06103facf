"""The result a daemon writes for a finished job, as its status document and its "completed"
webhook carry it: the video named relative to the output folder, never by a server path
(issue 20, item 5), in the production layout (OUTPUT_DIR outside the project) and the default one."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from inference.daemon.active import ActiveJob
from inference.daemon.config import DaemonConfig
from inference.daemon.database import DatabaseCalls
from inference.daemon.outcome import JobRun, OutcomeRecorder
from inference.daemon.stop import StopRequests
from inference.runtime import StopFlag
from inference.video import VideoInfo
from tests.conftest import make_ready_job
from videojobs import selectors, services
from videojobs.models import JobStatus, VideoJob, WebhookDelivery

pytestmark = pytest.mark.django_db

TOPOLOGY = {"world_size": 1, "ulysses_size": 1, "ring_size": 1, "cfg_size": 1, "dit_fsdp": False, "t5_fsdp": False,
            "t5_cpu": False, "vae_parallel": False, "device": "cpu", "attention_backend": "native"}


@pytest.fixture(autouse=True)
def _webhooks_on(settings):
    settings.WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef0123456789"
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]


def complete_through_the_daemon(job: VideoJob) -> VideoJob:
    """Claim ``job`` and record its success as rank 0 does once its video is written."""
    claimed = services.claim_next_job(worker="w1")
    assert claimed.pk == job.pk
    config = DaemonConfig.from_settings()
    video = VideoInfo(path=config.output_dir / f"{job.request_id}.mp4", size_bytes=1234, frames=25, fps=16,
                      width=64, height=64, duration_seconds=25 / 16)
    run = JobRun(timings={"denoising": 1.0}, video=video,
                 report={"acceleration": {"cache": {"method": "none"}}, "warnings": [], "dit_forwards": 4})
    active = ActiveJob(job_id=claimed.pk, attempt=claimed.attempt, request_id=job.request_id,
                       deadline=time.time() + 600)
    recorder = OutcomeRecorder(config, DatabaseCalls(StopRequests(is_leader=True)), TOPOLOGY)
    recorder.record(active, StopFlag.CONTINUE, run, {"seed": 7, "params": claimed.params}, [None])
    return VideoJob.objects.get(pk=job.pk)


@pytest.mark.parametrize("layout", ["outside the project (production)", "inside the project (default)"])
def test_a_finished_job_names_its_video_relative_to_the_output_folder(settings, layout):
    if layout.startswith("inside"):
        settings.OUTPUT_DIR = Path(settings.BASE_DIR) / "generated_videos"  # nothing is written there
    else:
        assert not Path(settings.OUTPUT_DIR).is_relative_to(settings.BASE_DIR)  # tmp_path, as /var/lib/videogen/videos
    job = complete_through_the_daemon(make_ready_job(webhook_url="http://127.0.0.1:9/hooks/video"))
    assert job.status == JobStatus.SUCCEED

    document = selectors.status_document(job=job)
    assert document["results"]["video_path"] == f"{job.request_id}.mp4"
    assert document["results"]["video_url"] == f"/videos/{job.request_id}.mp4"
    webhook = WebhookDelivery.objects.get(job=job, event="completed").payload
    assert webhook["results"]["video_path"] == f"{job.request_id}.mp4"
    # Neither the output folder nor the project folder reaches a client, nor is kept in the row.
    for text in (json.dumps(document), json.dumps(webhook), json.dumps(job.result)):
        assert str(settings.OUTPUT_DIR) not in text and str(settings.BASE_DIR) not in text
