"""aspect on a job (issue 19, item 5): validated on /video/submit, the size it gives fixed when the
input is prepared and reported in the status document, and an "auto" job run on the tiny model at
the size its image's aspect ratio gives, with the whole image as its first frame."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from inference.daemon.job import _generation_request
from inference.generate import prepare_condition_image
from inference.video import probe_mp4
from tests.conftest import make_job, png_bytes
from tests.daemon_support import daemon_argv, finished, running, service_env, wait_for
from tests.generate_support import random_image, run_on_cpu
from videojobs import selectors, tasks
from videojobs.models import JobStatus, VideoJob

pytestmark = pytest.mark.django_db

SMALL = {"image_size": "64*64", "num_frames": 9, "infer_steps": 2, "guidance_scale": 5.0, "seed": 42,
         "sample_solver": "unipc", "sample_shift": 5.0}


def submit_upload(api, image: bytes, **fields) -> str:
    body = {"prompt": "a cat walks across a sunny garden", "image": io.BytesIO(image), **fields}
    response = api.post("/video/submit", body, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["requestId"]


def status(api, request_id: str) -> dict:
    return api.post("/video/status", {"requestId": request_id}, format="json").json()


def test_aspect_defaults_to_crop_and_the_status_reports_image_size_at_once(api, valid_submit):
    request_id = api.post("/video/submit", {**valid_submit, "image_size": "832*480"}, format="json").json()["requestId"]
    assert VideoJob.objects.get(request_id=request_id).params["aspect"] == "crop"
    assert status(api, request_id)["size"] == "832*480"


@pytest.mark.parametrize("value", ["stretch", "", 1, True, None])
def test_a_bad_aspect_is_a_400_naming_the_field(api, valid_submit, value):
    response = api.post("/video/submit", {**valid_submit, "aspect": value}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "VALIDATION_ERROR" and "aspect" in body["fields"]


def test_an_auto_job_has_no_size_until_its_image_is_known(api, valid_submit):
    request_id = api.post("/video/submit", {**valid_submit, "aspect": "auto"}, format="json").json()["requestId"]
    assert VideoJob.objects.get(request_id=request_id).params["aspect"] == "auto"
    assert status(api, request_id)["size"] is None


def test_preparing_an_auto_job_fixes_its_size_from_the_image(api):
    # 120 x 80 at 64*64's area: lat_h = round(sqrt(4096 * 2/3) // 8 // 2 * 2) = 6, lat_w = 8.
    request_id = submit_upload(api, png_bytes(120, 80), image_size="64*64", aspect="auto")
    job = VideoJob.objects.get(request_id=request_id)
    tasks.prepare_input(job.pk)
    job.refresh_from_db()
    assert job.input_ready_at is not None
    assert job.params["output_size"] == "64*48"
    assert status(api, request_id)["size"] == "64*48"


def test_preparing_a_crop_job_records_image_size(api):
    request_id = submit_upload(api, png_bytes(120, 80), image_size="64*64")
    tasks.prepare_input(VideoJob.objects.get(request_id=request_id).pk)
    assert VideoJob.objects.get(request_id=request_id).params["output_size"] == "64*64"


def test_an_image_too_narrow_for_auto_fails_its_job_naming_aspect(api):
    request_id = submit_upload(api, png_bytes(4, 400), image_size="64*64", aspect="auto")
    tasks.prepare_input(VideoJob.objects.get(request_id=request_id).pk)
    job = VideoJob.objects.get(request_id=request_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, "VALIDATION_ERROR")
    assert job.reason.startswith("aspect: ") and "crop" in job.reason


def test_auto_keeps_the_whole_image_and_crop_cuts_its_sides() -> None:
    image = random_image(120, 80)
    whole = prepare_condition_image(image, 64, 48, aspect="auto")
    assert np.array_equal(np.asarray(whole), np.asarray(image.resize((64, 48), PIL.Image.Resampling.LANCZOS)))
    cropped = prepare_condition_image(image, 64, 64, aspect="crop")
    # Covering 64 x 64 scales the image to 96 x 64 and keeps its middle 64 columns.
    middle = image.resize((96, 64), PIL.Image.Resampling.LANCZOS).crop((16, 0, 80, 64))
    assert np.array_equal(np.asarray(cropped), np.asarray(middle))


@pytest.mark.parametrize(("aspect", "frame_size"), [("auto", (48, 64)), ("crop", (64, 64))])
def test_a_prepared_job_runs_on_the_tiny_model_at_the_size_its_aspect_gives(
    api, settings, tiny_components, aspect, frame_size,
):
    # Through the service (the API's ranges would ask for 25 frames and 20 steps), then prepared
    # as the qcluster does, and given to the daemon as its loop sends it: params and stored image.
    job = make_job(image_url="", image_bytes=png_bytes(120, 80, color=(40, 160, 90)),
                   params={**SMALL, "aspect": aspect})
    request_id = job.request_id
    tasks.prepare_input(job.pk)
    job.refresh_from_db()
    message = {"prompt": job.prompt, "negative_prompt": job.negative_prompt, "params": job.params, "seed": 42,
               "image_png": (Path(settings.MEDIA_ROOT) / job.input_image).read_bytes()}
    request = _generation_request(message)
    assert (request.height, request.width, request.aspect) == (*frame_size, aspect)
    frames = run_on_cpu(tiny_components, request).frames
    assert frames.shape == (9, *frame_size, 3)
    assert status(api, request_id)["size"] == f"{frame_size[1]}*{frame_size[0]}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_auto_job_runs_in_the_daemon_and_its_video_keeps_the_images_aspect(settings, tiny_ckpt, tmp_path):
    # The real daemon process on the tiny model: a 120 x 80 upload at 64*64's area -> 64*48.
    Path(settings.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    job = make_job(image_url="", image_bytes=png_bytes(120, 80),
                   params={**SMALL, "num_frames": 25, "infer_steps": 20, "guidance_scale": 3.0, "aspect": "auto"})
    tasks.prepare_input(job.pk)
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt), log):
        done = wait_for(lambda: finished(job.pk), timeout=180, what="the auto job", log=log)
    assert done.status == JobStatus.SUCCEED, done.reason
    document = selectors.status_document(job=done)
    assert document["size"] == document["results"]["resolution"] == "64*48"
    info = probe_mp4(Path(settings.OUTPUT_DIR) / f"{job.request_id}.mp4")
    assert (info.frames, info.width, info.height) == (25, 64, 48)
