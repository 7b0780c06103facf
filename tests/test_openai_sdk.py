"""The official openai SDK (client.videos, client.models) against the live test server: every
call a user of the SDK makes, and the typed exceptions it raises from our errors. The end to end
test runs the real qcluster and inference daemon on the tiny model."""
from __future__ import annotations

import io
import sys
import warnings

import openai
import pytest
from PIL import Image

from inference.video import probe_mp4
from tests.daemon_support import daemon_argv, running, service_env
from tests.openai_support import PROMPT, new_key, png_file
from videojobs import selectors
from videojobs.models import JobStatus, VideoJob

pytestmark = [pytest.mark.django_db(transaction=True),
              # The SDK marks the videos resource deprecated (the Sora API's end); the protocol stays.
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SMALL = {"infer_steps": 20, "guidance_scale": 3.0, "seed": 5, "sample_shift": 5.0}


@pytest.fixture
def sdk(live_server, settings):
    settings.MAX_CONCURRENT_TASKS = settings.OWNER_MAX_UNFINISHED = 50

    def make(key: str = "EMPTY") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0, timeout=30)

    return make


def test_the_sdk_creates_lists_retrieves_remixes_and_deletes(sdk):
    client = sdk()
    # 1. Create with an uploaded file (multipart) and with an image_url (the SDK's create takes only
    #    a file as input_reference: the object form goes in extra_body, as input_reference[image_url]).
    uploaded = client.videos.create(prompt=PROMPT, input_reference=png_file(), size="64x64", seconds="2",
                                    extra_body={"guidance_scale": 4.5})
    assert (uploaded.status, uploaded.seconds, uploaded.size) == ("queued", "2.06", "64x64")
    linked = client.videos.create(prompt=PROMPT, extra_body={"input_reference": {"image_url": "https://example.com/a.png"}},
                                  size="832x480")
    job = VideoJob.objects.get(request_id=linked.id.removeprefix("video_"))
    assert job.image_url == "https://example.com/a.png" and job.params["image_size"] == "832*480"
    assert VideoJob.objects.get(request_id=uploaded.id.removeprefix("video_")).params["guidance_scale"] == 4.5
    # 2. List, paged by the SDK's cursor (after=last_id) until has_more is false.
    third = client.videos.create(prompt=PROMPT, input_reference=png_file(), size="64x64")
    first_page = client.videos.list(limit=2)
    assert [v.id for v in first_page.data] == [third.id, linked.id] and first_page.has_more
    assert [v.id for v in client.videos.list(limit=2)] == [third.id, linked.id, uploaded.id]  # auto-paging
    # 3. Remix the upload (still waiting for its input: the upload itself goes with the remix).
    remix = client.videos.remix(uploaded.id, prompt="The same kite, now at night under the stars")
    assert remix.remixed_from_video_id == uploaded.id and remix.prompt.endswith("stars")
    assert client.videos.retrieve(remix.id).seconds == "2.06"
    # 4. Delete, then every read is a NotFoundError.
    deleted = client.videos.delete(linked.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (linked.id, "video.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(linked.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(linked.id)
    assert linked.id not in [v.id for v in client.videos.list()]
    assert VideoJob.objects.get(request_id=linked.id.removeprefix("video_")).status == JobStatus.CANCELLED


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"size": "1792x1024"}, "size"),
    ({"input_reference": None}, "input_reference"),
    ({"model": "sora-2"}, "model"),
    ({"extra_body": {"num_frames": 30}}, "num_frames"),
])
def test_bad_requests_raise_bad_request_error_naming_the_param(sdk, kwargs, param):
    arguments = {"prompt": PROMPT, "input_reference": png_file(), "size": "64x64", **kwargs}
    with pytest.raises(openai.BadRequestError) as raised:
        sdk().videos.create(**{k: v for k, v in arguments.items() if v is not None})
    assert raised.value.param == param and raised.value.code == "validation_error"
    assert raised.value.type == "invalid_request_error"


def test_keys_a_wrong_key_and_another_owners_video(sdk, settings):
    mine, theirs = sdk(new_key("mine")), sdk(new_key("theirs"))
    video = mine.videos.create(prompt=PROMPT, input_reference=png_file(), size="64x64")
    with pytest.raises(openai.NotFoundError):
        theirs.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        theirs.videos.download_content(video.id)
    with pytest.raises(openai.AuthenticationError):
        sdk("abcdefgh." + "w" * 32).videos.list()
    settings.API_KEYS_REQUIRED = True
    with pytest.raises(openai.AuthenticationError):
        sdk("sk-not-a-key").models.list()
    assert [m.id for m in mine.models.list()] == ["wan2.1-i2v-14b-720p"]


def test_a_full_queue_raises_rate_limit_error_with_retry_after(sdk, settings):
    settings.MAX_CONCURRENT_TASKS = 0
    with pytest.raises(openai.RateLimitError) as raised:
        sdk().videos.create(prompt=PROMPT, input_reference=png_file(), size="64x64")
    assert raised.value.response.headers["Retry-After"] == str(settings.RETRY_AFTER_SECONDS)


def test_the_two_apis_see_the_same_job(sdk, live_server):
    import json
    import urllib.request

    video = sdk().videos.create(prompt=PROMPT, input_reference=png_file(), size="64x64")
    request = urllib.request.Request(f"{live_server.url}/video/status", data=json.dumps({"requestId": video.id}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        document = json.loads(response.read())
    assert document["requestId"] == video.id.removeprefix("video_") and document["status"] == "InQueue"
    assert sdk().videos.retrieve(document["requestId"]).id == video.id


@pytest.mark.slow
def test_create_and_poll_to_completed_then_download_every_variant(sdk, settings, tiny_ckpt, tmp_path):  # noqa: F811
    client = sdk()
    env = service_env(tiny_ckpt)
    qlog, dlog = tmp_path / "qcluster.log", tmp_path / "daemon.log"
    with running([sys.executable, "manage.py", "qcluster"], env, qlog), running(daemon_argv(), env, dlog):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            video = client.videos.create_and_poll(prompt=PROMPT, input_reference=png_file(width=80, height=60),
                                                  size="64x64", seconds="2", extra_body=SMALL, poll_interval_ms=200,
                                                  timeout=240)
    assert video.status == "completed", (video, dlog.read_text()[-3000:], qlog.read_text()[-2000:])
    assert (video.progress, video.seconds, video.size, video.error) == (100, "2.06", "64x64", None)
    assert video.completed_at >= video.created_at and video.expires_at > video.completed_at
    # The mp4 has the requested frames (2 s -> 33) and size.
    mp4 = tmp_path / "video.mp4"
    client.videos.download_content(video.id).write_to_file(mp4)
    info = probe_mp4(mp4)
    assert (info.frames, info.width, info.height, info.fps) == (33, 64, 64, 16)
    thumbnail = Image.open(io.BytesIO(client.videos.download_content(video.id, variant="thumbnail").content))
    assert thumbnail.format == "WEBP" and thumbnail.size == (64, 64)
    sheet = client.videos.download_content(video.id, variant="spritesheet")
    assert sheet.response.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(sheet.content)).size == (4 * 64, 4 * 64)
    # The original API sees the same job, finished.
    job = VideoJob.objects.get(request_id=video.id.removeprefix("video_"))
    assert selectors.status_document(job=job)["results"]["frames"] == 33


def test_loras_and_aspect_ride_along_as_extra_fields_through_the_sdk(sdk):
    from videojobs import services

    services.register_worker(name="w-loras", host="h", pid=1, world_size=1, topology={}, device="cpu", model="tiny")
    services.update_worker(name="w-loras", state="idle", loras=[
        {"name": name, "format": "wan", "rank": 4, "size_bytes": 1, "sha256": "0" * 12, "memory_bytes": 1}
        for name in ("distill", "style.v2")])
    client = sdk()
    # The SDK sends extra_body's list of objects in a multipart form as loras[][name], loras[][scale].
    video = client.videos.create(prompt=PROMPT, input_reference=png_file(), size="64x64", extra_body={
        "loras": [{"name": "distill", "scale": 1.0}, {"name": "style.v2", "scale": -0.5}], "aspect": "auto",
        "sample_solver": "distill"})
    job = VideoJob.objects.get(request_id=video.id.removeprefix("video_"))
    assert job.params["loras"] == [{"name": "distill", "scale": 1.0}, {"name": "style.v2", "scale": -0.5}]
    assert (job.params["aspect"], job.params["sample_solver"], job.params["infer_steps"]) == ("auto", "distill", 4)
    with pytest.raises(openai.BadRequestError) as raised:
        client.videos.create(prompt=PROMPT, input_reference=png_file(), size="64x64",
                             extra_body={"loras": [{"name": "nope", "scale": 1.0}]})
    assert raised.value.param == "loras" and "distill" in raised.value.message
