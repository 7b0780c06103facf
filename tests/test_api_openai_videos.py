"""/v1/videos and /v1/models through DRF's test client: the mapping onto /video/submit, the Video
object, ids shared with /video/*, the list's cursor, delete, remix, content, and OpenAI's error
shape. (tests/test_openai_sdk.py drives the same endpoints with the real openai SDK.)"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_job, make_ready_job, png_bytes
from tests.openai_support import PROMPT, finish_with_video, new_key, owner_of_key, png_file
from videojobs import selectors
from videojobs.models import JobStatus, VideoJob
from videojobs.selectors.openai_videos import video_id

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _room_in_the_queue(settings):
    settings.MAX_CONCURRENT_TASKS = settings.OWNER_MAX_UNFINISHED = 50


def create(api, **fields):
    form = {"prompt": PROMPT, "size": "64x64", "input_reference": png_file(), **fields}
    return api.post("/v1/videos", {k: v for k, v in form.items() if v is not None}, format="multipart")


def test_a_multipart_create_maps_size_and_seconds_onto_the_submit_parameters(api):
    response = create(api, seconds="2", model="wan2.1-i2v-14b-720p", guidance_scale="4.5", seed="7")
    assert response.status_code == 200, response.json()
    video = response.json()
    job = VideoJob.objects.get(request_id=video["id"].removeprefix("video_"))
    # 2 s at 16 fps is 32 frames: the nearest 4k+1 is 33, which is 2.06 s.
    assert job.params["num_frames"] == 33 and job.params["image_size"] == "64*64"
    assert job.params["guidance_scale"] == 4.5 and job.params["seed"] == 7
    assert (Path(job.image_url or "x").name, job.prompt) == ("x", PROMPT)  # an upload, no URL
    assert video["object"] == "video" and video["status"] == "queued" and video["progress"] == 0
    assert (video["seconds"], video["size"], video["model"]) == ("2.06", "64x64", "wan2.1-i2v-14b-720p")
    assert video["error"] is None and video["completed_at"] is None and video["remixed_from_video_id"] is None


@pytest.mark.parametrize(("seconds", "frames"), [("4", 65), ("1", 25), ("12", 117), (5.06, 81)])
def test_seconds_become_the_nearest_valid_frame_count_inside_the_contract(api, seconds, frames):
    response = api.post("/v1/videos", {"prompt": PROMPT, "size": "832x480", "seconds": seconds,
                                       "input_reference": {"image_url": "https://example.com/a.png"}}, format="json")
    assert response.status_code == 200, response.json()
    job = VideoJob.objects.get(request_id=response.json()["id"].removeprefix("video_"))
    assert job.params["num_frames"] == frames and job.image_url == "https://example.com/a.png"
    assert response.json()["seconds"] == f"{frames / 16:.2f}".rstrip("0").rstrip(".")


def test_a_json_create_takes_a_base64_data_url_as_an_upload(api):
    import base64

    url = "data:image/png;base64," + base64.b64encode(png_bytes(32, 32)).decode()
    response = api.post("/v1/videos", {"prompt": PROMPT, "input_reference": {"image_url": url}}, format="json")
    assert response.status_code == 200, response.json()
    job = VideoJob.objects.get(request_id=response.json()["id"].removeprefix("video_"))
    assert job.image_url == "" and job.params["image_size"] == "1280*720" and job.params["num_frames"] == 81


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"input_reference": None}, "input_reference", "image-to-video model"),
    ({"size": "1792x1024"}, "size", "choose one of 1280x720, 720x1280, 832x480, 480x832, 64x64"),
    ({"model": "sora-2"}, "model", "this server serves wan2.1-i2v-14b-720p"),
    ({"seconds": "soon"}, "seconds", "positive number of seconds"),
    ({"seconds": "2", "num_frames": "33"}, "seconds", "not both"),
    ({"guidance_scale": "50"}, "guidance_scale", "less than or equal to 20.0"),
    ({"num_frames": "30"}, "num_frames", "4k+1"),
    ({"sample_solver": "ddim"}, "sample_solver", "not a valid choice"),
    ({"temperature": "1"}, "temperature", "unknown parameter"),
    ({"prompt": "short"}, "prompt", "at least 10 characters"),
])
def test_a_bad_create_is_a_400_in_openais_shape_naming_the_param(api, fields, param, words):
    response = create(api, **fields)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert error["code"] == "validation_error" and words in error["message"], error
    assert not VideoJob.objects.exists()


def test_an_extra_field_gets_the_same_message_as_on_video_submit(api):
    original = api.post("/video/submit", {"prompt": PROMPT, "image_url": "https://example.com/a.png",
                                          "infer_steps": 5}, format="json").json()
    openai = create(api, infer_steps="5").json()["error"]
    assert original["fields"]["infer_steps"][0] in openai["message"]


def test_both_apis_see_the_same_job_in_either_id_form(api):
    video = create(api).json()
    request_id = video["id"].removeprefix("video_")
    assert api.post("/video/status", {"requestId": video["id"]}, format="json").json()["requestId"] == request_id
    assert api.get(f"/video/{video['id']}").json()["status"] == "InQueue"
    job = make_job()
    assert api.get(f"/v1/videos/{job.request_id}").json()["id"] == video_id(job.request_id)
    assert api.get(f"/v1/videos/video_{job.request_id}").json()["prompt"] == job.prompt


def test_statuses_map_and_a_cancelled_job_is_failed_with_code_cancelled(api):
    job = make_job()
    assert api.post("/video/cancel", {"requestId": job.request_id}, format="json").status_code == 200
    video = api.get(f"/v1/videos/{video_id(job.request_id)}").json()
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled"
    assert api.get(f"/v1/videos/{video_id(make_job().request_id)}")["openai-poll-after-ms"] == "5000"
    done = make_ready_job()
    finish_with_video(done)
    assert "openai-poll-after-ms" not in api.get(f"/v1/videos/{video_id(done.request_id)}")
    video = api.get(f"/v1/videos/{video_id(done.request_id)}").json()
    assert (video["status"], video["progress"], video["seconds"]) == ("completed", 100, "1.56")
    assert video["completed_at"] is not None and video["expires_at"] == video["completed_at"] + 30 * 86400


def test_the_list_pages_by_cursor_in_either_order_and_holds_only_the_callers_videos(api):
    ids = [video_id(make_job(owner="").request_id) for _ in range(5)]
    make_job(owner="key:someone")
    first = api.get("/v1/videos", {"limit": 2}).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [v["id"] for v in first["data"]] == ids[::-1][:2] and first["last_id"] == ids[3]
    rest = api.get("/v1/videos", {"limit": 10, "after": first["last_id"]}).json()
    assert [v["id"] for v in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False
    ascending = api.get("/v1/videos", {"order": "asc", "limit": 3, "after": ids[0]}).json()
    assert [v["id"] for v in ascending["data"]] == ids[1:4]
    bad = api.get("/v1/videos", {"after": "video_" + "0" * 32}).json()["error"]
    assert bad["param"] == "after"
    # A video deleted while paging still marks its place.
    api.delete(f"/v1/videos/{first['last_id']}")
    assert [v["id"] for v in api.get("/v1/videos", {"after": first["last_id"]}).json()["data"]] == ids[::-1][2:]


def test_delete_cancels_removes_the_files_and_every_read_then_answers_404(api, django_capture_on_commit_callbacks):
    job = make_ready_job(owner="")
    video = finish_with_video(job)
    Path(selectors.video_path(job=job)).with_name(f"{job.request_id}.thumbnail.webp").write_bytes(b"x")
    queued = make_job(owner="")
    with django_capture_on_commit_callbacks(execute=True):
        body = api.delete(f"/v1/videos/{video_id(job.request_id)}").json()
        api.delete(f"/v1/videos/{queued.request_id}")
    assert body == {"id": video_id(job.request_id), "object": "video.deleted", "deleted": True}
    assert not video.exists() and not list(video.parent.glob(f"{job.request_id}*"))
    queued.refresh_from_db()
    assert queued.status == JobStatus.CANCELLED and queued.deleted_at is not None
    for path in (f"/v1/videos/{video_id(job.request_id)}", f"/v1/videos/{job.request_id}/content",
                 f"/video/{job.request_id}", f"/videos/{job.request_id}.mp4", f"/jobs/{job.request_id}"):
        assert api.get(path).status_code == 404, path
    assert api.post("/video/status", {"requestId": job.request_id}, format="json").status_code == 404
    assert api.delete(f"/v1/videos/{job.request_id}").json()["error"]["type"] == "invalid_request_error"
    assert api.get("/v1/videos").json()["data"] == [] and api.get("/video/jobs").json()["count"] == 0
    # The rows stay for /metrics and the admin.
    assert selectors.status_counts()[JobStatus.SUCCEED] == 1


def test_remix_is_a_new_job_with_the_same_image_and_parameters_and_a_new_prompt(api, settings):
    source = make_ready_job(owner="", params={"image_size": "64*64", "num_frames": 25, "infer_steps": 20, "seed": None})
    stored = Path(settings.MEDIA_ROOT) / source.input_image
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(png_bytes(64, 64))
    finish_with_video(source)
    response = api.post(f"/v1/videos/{video_id(source.request_id)}/remix",
                        {"prompt": "The same kite, now at night under the stars"}, format="json")
    assert response.status_code == 200, response.json()
    remix = response.json()
    assert remix["remixed_from_video_id"] == video_id(source.request_id) and remix["status"] == "queued"
    job = VideoJob.objects.get(request_id=remix["id"].removeprefix("video_"))
    # The seed the source ran with (it had none): the remix differs by its prompt only.
    assert job.params == {**source.params, "seed": 11} and job.remixed_from == source.request_id
    assert job.input_ready_at is not None and (Path(settings.MEDIA_ROOT) / job.input_image).read_bytes() == stored.read_bytes()
    assert api.get(f"/v1/videos/{remix['id']}").json()["remixed_from_video_id"] == video_id(source.request_id)
    short = api.post(f"/v1/videos/{source.request_id}/remix", {"prompt": "hi"}, format="json").json()["error"]
    assert short["param"] == "prompt"


def test_content_serves_the_mp4_with_ranges_a_thumbnail_and_a_sprite_sheet(api):
    job = make_ready_job(owner="")
    video = finish_with_video(job, frames=25)
    url = f"/v1/videos/{video_id(job.request_id)}/content"
    whole = api.get(url)
    assert whole.status_code == 200 and whole["Content-Type"] == "video/mp4" and whole["Accept-Ranges"] == "bytes"
    assert b"".join(whole.streaming_content) == video.read_bytes()
    part = api.get(url, HTTP_RANGE="bytes=10-19")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 10-19/{video.stat().st_size}"
    assert b"".join(part.streaming_content) == video.read_bytes()[10:20]
    assert api.get(url, HTTP_RANGE=f"bytes={video.stat().st_size}-").status_code == 416
    thumbnail = api.get(url, {"variant": "thumbnail"})
    assert thumbnail["Content-Type"] == "image/webp"
    image = Image.open(io.BytesIO(b"".join(thumbnail.streaming_content)))
    assert image.format == "WEBP" and image.size == (64, 64)
    sheet = api.get(url, {"variant": "spritesheet"})
    assert sheet["Content-Type"] == "image/jpeg"
    grid = Image.open(io.BytesIO(b"".join(sheet.streaming_content)))
    assert grid.format == "JPEG" and grid.size == (4 * 64, 4 * 64)  # 16 of the 25 frames, 4 by 4
    # The frames are in time order: the grey level rises from the first tile to the last.
    assert grid.getpixel((8, 8))[0] < grid.getpixel((3 * 64 + 8, 3 * 64 + 8))[0]
    assert api.get(url, {"variant": "poster"}).json()["error"]["param"] == "variant"
    # Cached beside the video, and deleted with it (here by the disk quota).
    assert sorted(p.name for p in video.parent.iterdir()) == sorted(
        [video.name, f"{job.request_id}.spritesheet.jpg", f"{job.request_id}.thumbnail.webp"])
    from videojobs import services

    assert services.enforce_output_quota(max_bytes=0) == 1 and list(video.parent.iterdir()) == []


def test_content_of_an_unfinished_failed_or_expired_video_is_a_clear_4xx(api, settings):
    queued = make_job(owner="")
    error = api.get(f"/v1/videos/{queued.request_id}/content").json()["error"]
    assert error["code"] == "not_finished" and "queued" in error["message"]
    api.post("/video/cancel", {"requestId": queued.request_id}, format="json")
    assert api.get(f"/v1/videos/{queued.request_id}/content").status_code == 409
    done = make_ready_job(owner="")
    finish_with_video(done)
    from videojobs import services

    services.enforce_output_quota(max_bytes=0)
    gone = api.get(f"/v1/videos/{done.request_id}/content")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone"
    assert api.get(f"/v1/videos/{done.request_id}").json()["expires_at"] is not None


def test_bearer_keys_own_videos_and_another_owners_video_is_404(api, settings):
    key, other = new_key("a"), new_key("b")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    video = create(api).json()
    assert VideoJob.objects.get().owner == owner_of_key(key)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other}")
    assert api.get(f"/v1/videos/{video['id']}").status_code == 404
    assert api.get("/v1/videos").json()["data"] == []
    api.credentials(HTTP_AUTHORIZATION="Bearer abcdefgh." + "x" * 32)
    wrong = api.get("/v1/videos")
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"


def test_a_placeholder_key_is_anonymous_only_where_keys_are_optional(api, settings):
    api.credentials(HTTP_AUTHORIZATION="Bearer EMPTY")
    assert create(api).status_code == 200 and VideoJob.objects.get().owner == ""
    settings.API_KEYS_REQUIRED = True
    refused = api.get("/v1/videos")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "authentication_failed"


def test_a_full_queue_is_a_429_with_retry_after_in_openais_shape(api, settings):
    settings.MAX_CONCURRENT_TASKS = 1
    make_job(owner="someone")
    response = create(api)
    assert response.status_code == 429 and response["Retry-After"] == str(settings.RETRY_AFTER_SECONDS)
    assert response.json()["error"] == {"message": response.json()["error"]["message"], "type": "rate_limit_error",
                                        "param": None, "code": "queue_full"}


def test_unknown_paths_methods_and_big_bodies_under_v1_answer_in_openais_shape(api, settings):
    assert api.get("/v1/nothing").json()["error"]["code"] == "not_found"
    assert api.put("/v1/videos").json()["error"]["code"] == "method_not_allowed"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    too_big = api.post("/v1/videos/x/remix", {"prompt": "a" * 100}, format="json")
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    # The original endpoints keep their own shape.
    assert api.get("/video/nothing-here").json()["error"] == "NOT_FOUND"


def test_models_lists_the_served_model(api, settings):
    settings.OPENAI_MODEL_ID = "wan-test"
    assert api.get("/v1/models").json() == {"object": "list", "data": [
        {"id": "wan-test", "object": "model", "created": 0, "owned_by": "wan-ai"}]}
    assert api.get("/v1/models/wan-test").json()["id"] == "wan-test"
    assert api.get("/v1/models/other").status_code == 404


def test_a_list_the_sdk_sends_as_name_brackets_reaches_its_field():
    from django.http import QueryDict

    from videojobs.api.openai.mapping import submit_data

    form = QueryDict(mutable=True)
    form.update({"prompt": PROMPT, "size": "64x64", "webhook_url": "https://hooks.example.com/x"})
    form.setlist("webhook_events[]", ["started", "completed"])
    form["input_reference[image_url]"] = "https://example.com/a.png"
    body, origin = submit_data(data=form, files={}, multipart=True)
    assert body["webhook_events"] == ["started", "completed"] and body["image_url"] == "https://example.com/a.png"
    assert body["image_size"] == "64*64" and origin["image_size"] == "size"


def test_a_preview_of_an_mp4_that_cannot_be_decoded_is_a_409_not_a_500(api):
    job = make_ready_job(owner="")
    finish_with_video(job).write_bytes(b"not an mp4 at all")
    response = api.get(f"/v1/videos/{job.request_id}/content", {"variant": "thumbnail"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_video"
    assert api.get(f"/v1/videos/{job.request_id}/content").status_code == 200  # the file itself is served as is


def test_deleting_a_running_video_asks_its_daemon_to_stop_and_hides_it_at_once(api, settings):
    from tests.admin_support import running_job
    from videojobs import services

    job = running_job(settings, owner="")
    assert api.get(f"/v1/videos/{job.request_id}").json()["status"] == "in_progress"
    assert api.delete(f"/v1/videos/{job.request_id}").json()["deleted"] is True
    job.refresh_from_db()
    assert job.status == JobStatus.IN_PROGRESS and job.cancel_requested_at is not None and job.deleted_at is not None
    assert services.is_cancel_requested(job_id=job.pk) and api.get(f"/v1/videos/{job.request_id}").status_code == 404


def test_the_admin_shows_deleted_and_remixed_videos(api, admin_client, settings):
    source = make_ready_job(owner="")
    stored = Path(settings.MEDIA_ROOT) / source.input_image
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(png_bytes(64, 64))
    remix = api.post(f"/v1/videos/{source.request_id}/remix", {"prompt": "The same kite, now at night"}, format="json")
    remixed = VideoJob.objects.get(request_id=remix.json()["id"].removeprefix("video_"))
    page = admin_client.get(f"/admin/videojobs/videojob/{remixed.pk}/change/").content.decode()
    assert "Remixed from" in page and source.request_id in page
    api.delete(f"/v1/videos/{source.request_id}")
    deleted = admin_client.get("/admin/videojobs/videojob/", {"deleted_at__isnull": "False"}).content.decode()
    assert source.request_id in deleted and remixed.request_id not in deleted


def test_a_running_video_deleted_before_it_sees_the_cancel_is_not_kept_when_it_finishes(api):
    from videojobs import services

    job = make_ready_job(owner="")
    claimed = services.claim_next_job(worker="w1")
    assert claimed is not None and claimed.pk == job.pk
    assert api.delete(f"/v1/videos/{video_id(job.request_id)}").json()["deleted"] is True
    # The daemon finishes the attempt before its next step would have seen the cancel.
    assert services.complete_job(job_id=job.pk, attempt=claimed.attempt, result={"video": "x.mp4"},
                                 timings={"denoising": 1.0}) is False  # False: the daemon drops the video
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.result == {} and job.deleted_at is not None
    assert api.get(f"/v1/videos/{video_id(job.request_id)}").status_code == 404
