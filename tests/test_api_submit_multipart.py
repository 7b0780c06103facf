"""POST /video/submit with multipart/form-data: the image file itself, under the limits of a fetched one.

The request checks the byte cap, the header (format, pixels) and admission; prepare_input decodes
the file later, as it does a fetched image."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image, ImageFile

from tests.conftest import make_job, png_bytes
from tests.net_support import blank_1bit_png
from videojobs import services, tasks
from videojobs.models import JobPhase, JobStatus, VideoJob
from videojobs.services import submit as submit_service

pytestmark = pytest.mark.django_db

FORM = {"prompt": "A red kite over a green hill at dawn", "image_size": "64*64", "num_frames": "25",
        "infer_steps": "20", "guidance_scale": "4.5", "seed": "7"}


def upload(api, data: bytes, name: str = "input.png", **fields):
    form = {**FORM, **fields}
    if data is not None:
        form["image"] = io.BytesIO(data)
        form["image"].name = name
    return api.post("/video/submit", form, format="multipart")


def image_bytes(fmt: str, size=(40, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (10, 120, 200) if mode == "RGB" else 128).save(buffer, format=fmt)
    return buffer.getvalue()


def prepared(request_id: str) -> VideoJob:
    """The job once its prepare_input task (enqueued at commit) has run."""
    job = VideoJob.objects.get(request_id=request_id)
    tasks.prepare_input(job.pk)
    return VideoJob.objects.get(pk=job.pk)


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """The sizes of the images decoded (normalize_image, as the services call it), in order."""
    calls: list[int] = []
    real = submit_service.normalize_image

    def spy(data: bytes, **kwargs):
        calls.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(submit_service, "normalize_image", spy)
    return calls


def test_uploaded_image_makes_a_job_ready_to_claim_once_prepare_input_ran(api):
    response = upload(api, png_bytes(40, 30))
    assert response.status_code == 202, response.content
    job = VideoJob.objects.get(request_id=response.json()["requestId"])
    assert (job.status, job.phase, job.input_ready_at) == (JobStatus.IN_QUEUE, JobPhase.PREPARING, None)
    assert services.claim_next_job(worker="w1") is None
    job = prepared(job.request_id)
    assert (job.status, job.phase) == (JobStatus.IN_QUEUE, JobPhase.WAITING)
    assert job.input_ready_at is not None and job.image_url == ""
    stored = Path(settings.MEDIA_ROOT) / job.input_image
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == job.input_sha256
    assert Image.open(stored).size == (40, 30)
    # Form text became the typed parameters a JSON body would have given.
    assert (job.params["num_frames"], job.params["infer_steps"], job.params["seed"]) == (25, 20, 7)
    assert job.params["guidance_scale"] == 4.5


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP"])
def test_accepted_formats_are_reencoded_as_png(api, fmt):
    response = upload(api, image_bytes(fmt), name=f"input.{fmt.lower()}")
    assert response.status_code == 202, response.content
    job = prepared(response.json()["requestId"])
    assert (Path(settings.MEDIA_ROOT) / job.input_image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("data", "words"), [
    (b"%PDF-1.4 not a picture", "not a JPEG, PNG"),
    (image_bytes("TIFF"), "not a JPEG, PNG"),
    (png_bytes(40, 30)[:7], "not a JPEG, PNG"),
])
def test_unusable_file_is_a_400_on_the_image_field(api, data, words):
    response = upload(api, data)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "VALIDATION_ERROR"
    assert words in body["fields"]["image"][0]
    assert not VideoJob.objects.exists()


def test_upload_is_decoded_by_prepare_input_not_in_the_request(api, settings, decodes,
                                                               django_capture_on_commit_callbacks):
    data = png_bytes(40, 30)
    with django_capture_on_commit_callbacks() as on_commit:
        response = upload(api, data)
    assert response.status_code == 202, response.content
    assert decodes == [] and len(on_commit) == 1  # enqueues prepare_input
    job = VideoJob.objects.get(request_id=response.json()["requestId"])
    stored = Path(settings.MEDIA_ROOT) / "inputs" / f"{job.request_id}.upload"
    assert stored.read_bytes() == data  # as sent, where the task reads it
    job = prepared(job.request_id)
    assert decodes == [len(data)]
    assert job.phase == JobPhase.WAITING and not stored.exists()
    assert sorted(p.name for p in stored.parent.iterdir()) == [f"{job.request_id}.png"]


def test_a_client_over_its_rate_gets_its_429_before_its_upload_is_decoded(api, settings, decodes):
    settings.OWNER_SUBMITS_PER_MINUTE = 1
    assert upload(api, png_bytes()).status_code == 202
    response = upload(api, blank_1bit_png(6320, 6320))  # 5 KB, 40 megapixels once decoded
    assert response.status_code == 429 and response.json()["error"] == "OWNER_LIMIT"
    assert "Retry-After" in response
    assert decodes == [] and VideoJob.objects.count() == 1


def test_a_full_queue_refuses_an_upload_before_decoding_it(api, settings, decodes):
    settings.MAX_CONCURRENT_TASKS = 1
    make_job(owner="key:someone")
    response = upload(api, blank_1bit_png(6320, 6320))
    assert response.status_code == 429 and response.json()["error"] == "QUEUE_FULL"
    assert decodes == [] and VideoJob.objects.count() == 1


def test_too_many_pixels_are_refused_from_the_header_without_decoding(api, settings, decodes, monkeypatch):
    def load(self, *args, **kwargs):
        raise AssertionError("pixel data must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    settings.IMAGE_MAX_PIXELS = 1_000_000
    response = upload(api, blank_1bit_png(6320, 6320))
    assert response.status_code == 400
    assert response.json()["fields"]["image"] == ["image is 6320x6320 pixels; the limit is 1000000"]
    assert decodes == [] and not VideoJob.objects.exists()


def test_a_file_corrupt_past_its_header_ends_the_job_failed_as_not_an_image(api, settings):
    response = upload(api, png_bytes(40, 30)[:60])  # the header is whole, the pixels are cut
    assert response.status_code == 202, response.content
    job = prepared(response.json()["requestId"])
    assert (job.status, job.error_code) == (JobStatus.FAILED, "IMAGE_NOT_AN_IMAGE")
    assert job.reason == "the uploaded file could not be decoded as an image (it is corrupt or truncated)"
    assert not list((Path(settings.MEDIA_ROOT) / "inputs").iterdir())  # the stored upload is gone too


def test_file_over_the_byte_cap_is_refused(api, settings):
    settings.IMAGE_MAX_BYTES = 2048
    response = upload(api, image_bytes("BMP", size=(64, 64)))
    assert response.status_code == 400
    assert "the limit is 2048" in response.json()["fields"]["image"][0]


def test_picture_over_the_pixel_limit_is_refused(api, settings):
    settings.IMAGE_MAX_PIXELS = 64 * 64
    response = upload(api, png_bytes(100, 100))
    assert response.status_code == 400
    assert "100x100 pixels" in response.json()["fields"]["image"][0]


def test_body_over_the_upload_cap_is_a_413(api, settings):
    settings.MAX_UPLOAD_REQUEST_BYTES = 4096
    response = upload(api, image_bytes("BMP", size=(80, 80)))
    assert response.status_code == 413


def test_json_body_keeps_its_small_cap(api, settings):
    # The larger cap is for multipart only: a JSON submit carries no file.
    response = api.post("/video/submit", data='{"prompt": "' + "x" * 70_000 + '"}', content_type="application/json")
    assert response.status_code == 413


def test_a_form_field_over_the_memory_cap_is_a_413_with_our_error_body(api, settings):
    # Django's multipart parser raises RequestDataTooBig inside request.data (issue 20, item 1).
    response = upload(api, png_bytes(), prompt="x" * 1_000_000)
    assert response.status_code == 413
    body = response.json()
    assert body["error"] == "PAYLOAD_TOO_LARGE"
    assert f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes" in body["message"]
    assert not VideoJob.objects.exists()


def test_more_form_fields_than_django_reads_is_a_400_with_our_error_body(api, settings):
    # TooManyFieldsSent, the same family (SuspiciousOperation).
    response = upload(api, png_bytes(), **{f"field{n}": "1" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)})
    assert response.status_code == 400
    assert response.json() == {"error": "BAD_REQUEST", "message": (
        f"the request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields")}


def test_more_files_than_django_reads_is_a_400_with_our_error_body(api, settings):
    files = [_named(b"x") for _ in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)]
    response = api.post("/video/submit", {**FORM, "image": files}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"] == "BAD_REQUEST" and "files" in response.json()["message"]


def test_missing_file_is_named_under_image(api):
    response = upload(api, None)
    assert response.status_code == 400
    assert "image" in response.json()["fields"]


def test_file_and_url_together_are_refused(api):
    response = upload(api, png_bytes(), image_url="https://example.com/a.png")
    assert response.status_code == 400
    assert "not both" in response.json()["fields"]["image_url"][0]


@pytest.mark.parametrize(("field", "value"), [("num_frames", "abc"), ("num_frames", "6"), ("guidance_scale", "x"),
                                              ("use_attentioncache", "maybe")])
def test_form_text_that_is_not_its_type_is_refused_on_its_field(api, field, value):
    response = upload(api, png_bytes(), **{field: value})
    assert response.status_code == 400
    assert field in response.json()["fields"]


def test_same_upload_with_same_idempotency_key_returns_the_same_job(api):
    first = api.post("/video/submit", {**FORM, "image": _named(png_bytes())}, format="multipart",
                     HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post("/video/submit", {**FORM, "image": _named(png_bytes())}, format="multipart",
                     HTTP_IDEMPOTENCY_KEY="k-1")
    other = api.post("/video/submit", {**FORM, "image": _named(png_bytes(color=(0, 0, 0)))}, format="multipart",
                     HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json() == again.json()
    assert other.status_code == 409


def test_the_fingerprint_of_an_upload_is_its_bytes_not_its_pixels(api):
    # The request's fingerprint takes the sha256 of the file as sent (no decoding in the request):
    # the same picture in another encoding, under the same key, is another request.
    first = api.post("/video/submit", {**FORM, "image": _named(image_bytes("PNG"))}, format="multipart",
                     HTTP_IDEMPOTENCY_KEY="k-2")
    other = api.post("/video/submit", {**FORM, "image": _named(image_bytes("BMP"))}, format="multipart",
                     HTTP_IDEMPOTENCY_KEY="k-2")
    assert first.status_code == 202
    assert other.status_code == 409 and other.json()["error"] == "IDEMPOTENCY_CONFLICT"


def _named(data: bytes):
    file = io.BytesIO(data)
    file.name = "input.png"
    return file


def test_webhook_events_may_be_repeated_or_comma_separated(api, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    response = upload(api, png_bytes(), webhook_url="http://127.0.0.1:9/h", webhook_events="started,completed")
    assert response.status_code == 202, response.content
    job = VideoJob.objects.get(request_id=response.json()["requestId"])
    assert job.webhook_events == ["started", "completed"]


def test_openapi_schema_documents_json_and_multipart(client):
    schema = client.get("/docs/schema", HTTP_ACCEPT="application/json").json()
    content = schema["paths"]["/video/submit"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    multipart = content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert schema["components"]["schemas"][multipart]["properties"]["image"]["format"] == "binary"
    assert "/video/{request_id}" in schema["paths"] and "/video/jobs" in schema["paths"]
