"""POST /video/submit: the original contract, field by field."""
from __future__ import annotations

import json
import re

import pytest

from videojobs.models import JobStatus, VideoJob

pytestmark = pytest.mark.django_db

URL = "/video/submit"


def submit(api, body, **kwargs):
    return api.post(URL, body, format="json", **kwargs)


def assert_validation_error(response, field: str):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "VALIDATION_ERROR"
    assert field in body["message"]
    assert field in body["fields"]
    return body


def test_valid_submit_returns_202_and_a_32_hex_request_id(api, valid_submit):
    response = submit(api, valid_submit)
    assert response.status_code == 202
    request_id = response.json()["requestId"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    job = VideoJob.objects.get(request_id=request_id)
    assert job.status == JobStatus.IN_QUEUE
    assert job.attempt == 0


def test_defaults_of_the_original_contract_are_stored(api, valid_submit):
    request_id = submit(api, valid_submit).json()["requestId"]
    params = VideoJob.objects.get(request_id=request_id).params
    assert params["image_size"] == "1280*720"
    assert params["num_frames"] == 81
    assert params["guidance_scale"] == 3.0
    assert params["infer_steps"] == 30
    assert params["seed"] is None
    assert params["sample_solver"] == "unipc"
    assert params["sample_shift"] == 5.0
    assert params["use_attentioncache"] is False and params["cache_method"] == "none"
    assert (params["start_step"], params["attentioncache_interval"], params["end_step"]) == (12, 4, 37)
    assert params["cache_threshold"] == 0.08
    assert (params["vae_parallel"], params["ulysses_size"], params["dit_fsdp"], params["t5_fsdp"], params["cfg_size"]) == (
        False, 1, False, False, 1,
    )


def test_full_original_example_request_is_accepted(api):
    body = {
        "prompt": "A white cat wearing sunglasses sits on a surfboard at the beach",
        "image_url": "https://example.com/input.jpg",
        "image_size": "1280*720",
        "num_frames": 81,
        "guidance_scale": 3.0,
        "infer_steps": 30,
        "seed": 42,
        "negative_prompt": "blurry, low quality",
        "vae_parallel": True,
        "ulysses_size": 8,
        "dit_fsdp": True,
        "t5_fsdp": True,
        "use_attentioncache": True,
        "start_step": 12,
        "attentioncache_interval": 4,
        "end_step": 37,
        "sample_solver": "unipc",
    }
    response = submit(api, body)
    assert response.status_code == 202, response.content
    job = VideoJob.objects.get(request_id=response.json()["requestId"])
    assert job.negative_prompt == "blurry, low quality"
    assert job.params["ulysses_size"] == 8 and job.params["seed"] == 42
    # 30 steps with end_step 37: accepted, the cache's range is clipped when the job runs.
    assert job.params["cache_method"] == "attention" and job.params["end_step"] == 37


@pytest.mark.parametrize(
    "field,value",
    [
        ("prompt", "x" * 10),
        ("prompt", "x" * 500),
        ("num_frames", 25),
        ("num_frames", 117),
        ("guidance_scale", 1.0),
        ("guidance_scale", 20.0),
        ("infer_steps", 20),
        ("infer_steps", 100),
        ("seed", 0),
        ("seed", 2147483647),
        ("negative_prompt", ""),
        ("negative_prompt", "n" * 500),
        ("image_size", "720*1280"),
        ("image_size", "832*480"),
        ("image_size", "480*832"),
        ("sample_solver", "dpm++"),
        ("sample_solver", "euler"),
        ("cfg_size", 2),
        ("image_url", "http://example.com/a.png"),
    ],
)
def test_range_edges_are_accepted(api, valid_submit, field, value):
    valid_submit[field] = value
    assert submit(api, valid_submit).status_code == 202


@pytest.mark.parametrize(
    "field,value",
    [
        ("prompt", "x" * 9),
        ("prompt", "x" * 501),
        ("prompt", None),
        ("num_frames", 20),
        ("num_frames", 121),
        ("num_frames", 124),
        ("num_frames", "many"),
        ("guidance_scale", 0.99),
        ("guidance_scale", 20.01),
        ("infer_steps", 19),
        ("infer_steps", 101),
        ("infer_steps", 30.5),
        ("seed", -1),
        ("seed", 2147483648),
        ("negative_prompt", "n" * 501),
        ("image_size", "1920*1080"),
        ("image_size", "big"),
        ("sample_solver", "ddim"),
        ("sample_shift", -1),
        ("ulysses_size", 0),
        ("cfg_size", 3),
        ("image_url", "ftp://example.com/a.png"),
        ("image_url", "file:///etc/passwd"),
        ("image_url", "not a url"),
        ("vae_parallel", "perhaps"),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(api, valid_submit, field, value):
    valid_submit[field] = value
    assert_validation_error(submit(api, valid_submit), field)
    assert VideoJob.objects.count() == 0


@pytest.mark.parametrize("field", ["prompt", "image_url"])
def test_missing_required_field_is_named(api, valid_submit, field):
    del valid_submit[field]
    assert_validation_error(submit(api, valid_submit), field)


def test_num_frames_not_4k_plus_1_names_the_nearest_valid_values(api, valid_submit):
    valid_submit["num_frames"] = 80
    body = assert_validation_error(submit(api, valid_submit), "num_frames")
    assert "77" in body["message"] and "81" in body["message"]


def test_every_bad_field_is_named_in_one_response(api):
    response = submit(api, {"prompt": "short", "image_url": "x", "num_frames": 1000, "sample_solver": "x"})
    body = assert_validation_error(response, "prompt")
    for field in ("image_url", "num_frames", "sample_solver"):
        assert field in body["fields"]


def test_attention_cache_window_must_be_ordered(api, valid_submit):
    valid_submit.update(use_attentioncache=True, start_step=30, end_step=20)
    assert_validation_error(submit(api, valid_submit), "start_step")


def test_attention_cache_start_equal_to_end_is_refused(api, valid_submit):
    valid_submit.update(cache_method="attention", start_step=20, end_step=20)
    body = assert_validation_error(submit(api, valid_submit), "start_step")
    assert "less than end_step (20)" in body["message"]


def test_an_unordered_window_is_fine_while_the_cache_is_off(api, valid_submit):
    valid_submit.update(start_step=30, end_step=20)
    assert submit(api, valid_submit).status_code == 202


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"attentioncache_interval": 0}, "attentioncache_interval"), ({"start_step": -1}, "start_step"),
     ({"cache_method": "teacache"}, "cache_method"), ({"cache_threshold": 1.5}, "cache_threshold"),
     ({"cache_threshold": -0.1}, "cache_threshold"),
     ({"use_attentioncache": True, "cache_method": "dbcache"}, "cache_method")],
)
def test_bad_cache_fields_are_400_naming_the_field(api, valid_submit, fields, field):
    valid_submit.update(fields)
    assert_validation_error(submit(api, valid_submit), field)


def test_the_adaptive_cache_is_asked_for_by_method_and_threshold(api, valid_submit):
    valid_submit.update(cache_method="dbcache", cache_threshold=0.2)
    response = submit(api, valid_submit)
    assert response.status_code == 202
    params = VideoJob.objects.get(request_id=response.json()["requestId"]).params
    assert (params["cache_method"], params["cache_threshold"]) == ("dbcache", 0.2)


def test_malformed_json_is_a_clean_400(api):
    response = api.post(URL, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "INVALID_JSON"


def test_wrong_content_type_is_415(api, valid_submit):
    response = api.post(URL, data="prompt=hello", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["error"] == "UNSUPPORTED_MEDIA_TYPE"


def test_oversized_body_is_413(api, valid_submit, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    valid_submit["negative_prompt"] = "n" * 5000
    response = api.post(URL, data=json.dumps(valid_submit), content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"] == "PAYLOAD_TOO_LARGE"


def test_get_is_405_in_the_error_shape(api):
    response = api.get(URL)
    assert response.status_code == 405
    assert response.json()["error"] == "METHOD_NOT_ALLOWED"


def test_queue_full_is_429_with_retry_after(api, valid_submit, settings):
    settings.MAX_CONCURRENT_TASKS = 2
    assert submit(api, valid_submit).status_code == 202
    assert submit(api, valid_submit).status_code == 202
    response = submit(api, valid_submit)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"] == "QUEUE_FULL"
    assert VideoJob.objects.count() == 2


def test_finished_jobs_free_their_slot(api, valid_submit, settings):
    settings.MAX_CONCURRENT_TASKS = 1
    first = submit(api, valid_submit).json()["requestId"]
    assert submit(api, valid_submit).status_code == 429
    api.post("/video/cancel", {"requestId": first}, format="json")
    assert submit(api, valid_submit).status_code == 202


def test_same_idempotency_key_returns_the_same_job(api, valid_submit):
    first = submit(api, valid_submit, HTTP_IDEMPOTENCY_KEY="abc-1").json()["requestId"]
    second = submit(api, valid_submit, HTTP_IDEMPOTENCY_KEY="abc-1")
    assert second.status_code == 202
    assert second.json()["requestId"] == first
    assert VideoJob.objects.count() == 1


def test_unexpected_error_is_500_without_traceback_or_path(api, valid_submit, monkeypatch):
    from videojobs import services

    def explode(**kwargs):
        raise RuntimeError("/secret/path/settings.py exploded")

    monkeypatch.setattr(services, "submit_job", explode)
    response = submit(api, valid_submit)
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "INTERNAL_ERROR"
    assert "/secret" not in response.content.decode() and "Traceback" not in response.content.decode()


def test_submit_enqueues_prepare_input_after_commit(api, valid_submit, django_capture_on_commit_callbacks, monkeypatch):
    from videojobs import services

    enqueued = []
    monkeypatch.setattr(services.handoff, "enqueue_prepare_input", enqueued.append)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        request_id = submit(api, valid_submit).json()["requestId"]
    assert len(callbacks) == 1
    assert enqueued == [VideoJob.objects.get(request_id=request_id).pk]


@pytest.mark.parametrize(("image_size", "shift"), [("832*480", 3.0), ("480*832", 3.0), ("720*1280", 5.0), ("64*64", 3.0)])
def test_a_submit_without_sample_shift_gets_the_official_shift_for_its_size(api, valid_submit, image_size, shift):
    request_id = submit(api, {**valid_submit, "image_size": image_size}).json()["requestId"]
    assert VideoJob.objects.get(request_id=request_id).params["sample_shift"] == shift
    # The status document reports the shift that runs.
    body = api.post("/video/status", {"requestId": request_id}, format="json").json()
    assert body["parameters"]["sample_shift"] == shift


def test_an_explicit_sample_shift_stays_as_sent_whatever_the_size(api, valid_submit):
    request_id = submit(api, {**valid_submit, "image_size": "832*480", "sample_shift": 5.0}).json()["requestId"]
    assert VideoJob.objects.get(request_id=request_id).params["sample_shift"] == 5.0
