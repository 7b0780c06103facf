"""Hostile or sloppy bodies and headers: a clear 4xx, never a 500 (issue 8, item 4)."""
from __future__ import annotations

import io
import json

import pytest

from videojobs.models import VideoJob

pytestmark = pytest.mark.django_db
URL = "/video/submit"


def post_raw(api, body: bytes, **extra):
    return api.generic("POST", URL, body, content_type="application/json", **extra)


def test_json_nested_ten_thousand_deep_is_a_400(api):
    response = post_raw(api, b"[" * 10_000 + b"]" * 10_000)
    assert response.status_code == 400
    assert response.json()["error"] == "INVALID_JSON" and "nested deeper than 32" in response.json()["message"]


def test_brackets_inside_strings_do_not_count_as_nesting(api, valid_submit):
    valid_submit["prompt"] = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ a bracket storm {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"
    assert post_raw(api, json.dumps(valid_submit).encode()).status_code == 202


@pytest.mark.parametrize("key", ["k" * 129, "café-key", "two\nlines", ""])
def test_a_bad_idempotency_key_is_a_400_naming_the_header(api, valid_submit, key):
    response = api.post(URL, valid_submit, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["fields"]
    assert not VideoJob.objects.exists()


def test_the_longest_allowed_idempotency_key_works(api, valid_submit):
    response = api.post(URL, valid_submit, format="json", HTTP_IDEMPOTENCY_KEY="k" * 128)
    assert response.status_code == 202


def _chunked(api, body: bytes):
    # What a server hands Django for Transfer-Encoding: chunked: a decoded stream, no length.
    return api.generic("POST", URL, b"", content_type="application/json", CONTENT_LENGTH="",
                       HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input": io.BytesIO(body)})


def test_a_chunked_body_over_the_cap_is_a_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = _chunked(api, b'{"prompt": "' + b"x" * 4096 + b'"}')
    assert response.status_code == 413 and response.json()["error"] == "PAYLOAD_TOO_LARGE"


def test_a_chunked_body_under_the_cap_is_read_not_dropped(api, valid_submit):
    response = _chunked(api, json.dumps(valid_submit).encode())
    assert response.status_code == 202, response.content


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_frames", "81"), ("num_frames", 81.0), ("infer_steps", True), ("seed", "42"),
     ("use_attentioncache", "true"), ("dit_fsdp", 1), ("guidance_scale", "3.0")],
)
def test_json_types_are_strict(api, valid_submit, field, value):
    valid_submit[field] = value
    response = api.post(URL, valid_submit, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt", 12345678901), ("prompt", 1.5e10), ("negative_prompt", 42), ("image_url", 1), ("image_size", 640),
     ("sample_solver", 1), ("cache_method", False), ("webhook_url", 1.5)],
)
def test_a_text_field_takes_only_a_json_string(api, valid_submit, field, value):
    # "prompt": 12345678901 was taken as the text "12345678901" (issue 20, item 9).
    valid_submit[field] = value
    response = api.post(URL, valid_submit, format="json")
    assert response.status_code == 400
    assert response.json()["fields"][field][0].startswith("Must be a JSON string")
    assert not VideoJob.objects.exists()


def test_webhook_events_takes_only_json_strings(api, valid_submit):
    valid_submit.update(webhook_url="https://example.com/hook", webhook_events=[1])
    response = api.post(URL, valid_submit, format="json")
    assert response.status_code == 400
    assert "Must be a JSON string" in response.json()["message"] and "webhook_events" in response.json()["fields"]


def test_an_integer_is_a_valid_number(api, valid_submit):
    valid_submit["guidance_scale"] = 4
    assert api.post(URL, valid_submit, format="json").status_code == 202
