"""A video deleted by the disk quota says so: the status document and the GET (issue 8, item 8)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_job
from videojobs import services
from videojobs.models import VideoJob

pytestmark = pytest.mark.django_db


def _finished_with_video(settings, size: int = 1500) -> VideoJob:
    job = make_job()
    folder = Path(settings.OUTPUT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job.request_id}.mp4").write_bytes(b"\0" * size)
    VideoJob.objects.filter(pk=job.pk).update(status="Succeed", result={
        "video_path": f"generated_videos/{job.request_id}.mp4", "video_file": f"{job.request_id}.mp4", "frames": 25})
    return job


def test_an_expired_video_has_no_url_and_says_why(api, settings):
    job = _finished_with_video(settings)
    assert services.enforce_output_quota(max_bytes=100) == 1
    results = api.post("/video/status", {"requestId": job.request_id}, format="json").json()["results"]
    assert results["expired"] is True and "MAX_OUTPUT_DIR_SIZE" in results["expired_reason"]
    assert "video_url" not in results and "video_path" not in results
    assert results["frames"] == 25


def test_the_get_of_an_expired_video_is_410_gone_with_the_reason(api, settings):
    job = _finished_with_video(settings)
    services.enforce_output_quota(max_bytes=100)
    response = api.get(f"/videos/{job.request_id}.mp4")
    assert response.status_code == 410
    assert response.json()["error"] == "GONE" and "MAX_OUTPUT_DIR_SIZE" in response.json()["message"]


def test_a_video_that_never_existed_is_still_404(api):
    assert api.get(f"/videos/{'0' * 32}.mp4").status_code == 404


def test_a_kept_video_is_served_with_its_url(api, settings):
    job = _finished_with_video(settings)
    results = api.post("/video/status", {"requestId": job.request_id}, format="json").json()["results"]
    assert results["video_url"] == f"/videos/{job.request_id}.mp4"
    assert api.get(results["video_url"]).status_code == 200
