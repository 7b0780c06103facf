"""The job page (Django test client): the form, its errors in place, the live panel, cancel,
owners and login. The real-browser run is tests/test_page_browser.py."""
from __future__ import annotations

import io
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils.text import capfirst
from PIL import Image
from pytest_django.asserts import assertInHTML

from tests.conftest import VALID_SUBMIT, make_job, make_ready_job, png_bytes
from tests.net_support import blank_1bit_png
from videojobs import services
from videojobs.errors import ImageInputError
from videojobs.models import JobPhase, VideoJob
from videojobs.services import submit as submit_service

pytestmark = pytest.mark.django_db

GOOD_FORM = {"prompt": VALID_SUBMIT["prompt"], "image_size": "64*64", "num_frames": "25", "infer_steps": "20"}


def upload(data: bytes = b"", name: str = "input.png", content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data or png_bytes(), content_type)


def field_block(html: str, name: str) -> str:
    """The markup of one input of the form: its label, control, hint and errors."""
    match = re.search(rf'<div class="field[^"]*" id="field-{name}">(.*?)\n</div>', html, re.S)
    assert match, f"no input {name!r} on the page"
    return match.group(1)


def errors_of(html: str, name: str) -> list[str]:
    return re.findall(r'<p class="error" role="alert">([^<]*)</p>', field_block(html, name))


def running_job(**overrides) -> VideoJob:
    make_ready_job(**overrides)
    return services.claim_next_job(worker="w1")


# --- the form ---------------------------------------------------------------------------


def test_the_index_shows_the_form_with_the_api_ranges_and_defaults(client):
    html = client.get("/").content.decode()
    assertInHTML('<input id="id_num_frames" name="num_frames" type="number" value="81" min="25" max="117" step="4">',
                 html)
    # Steps, guidance and solver default to the preset's (Fast / Quality: tests/test_page_presets.py).
    assertInHTML('<input id="id_infer_steps" name="infer_steps" type="number" value="" min="1" max="100" step="1">',
                 html)
    assertInHTML('<input id="id_guidance_scale" name="guidance_scale" type="number" value="" min="1.0" max="20.0"'
                 ' step="any">', html)
    assertInHTML('<option value="1280*720" selected>1280*720</option>', html)
    assertInHTML('<option value="64*64">64*64</option>', html)  # EXTRA_IMAGE_SIZES, as the API accepts
    assertInHTML('<option value="" selected>the preset&#x27;s</option>', html)
    assertInHTML('<option value="unipc">unipc</option>', html)
    assert 'enctype="multipart/form-data"' in html and 'name="image" type="file"' in html
    # The advanced inputs sit in a closed <details> below the main ones.
    details = html[html.index("<details"):html.index("</details>")]
    assert "<details>" in html and 'name="seed"' in details and 'name="negative_prompt"' in details
    assert 'name="num_frames"' not in details


def test_a_bad_submit_shows_each_error_under_its_input_and_keeps_the_values(client):
    response = client.post("/", {**GOOD_FORM, "prompt": "too short", "num_frames": "30", "image": upload()})
    html = response.content.decode()
    assert response.status_code == 400
    assert errors_of(html, "prompt") == ["Ensure this field has at least 10 characters."]
    assert "nearest valid values: 29 or 33" in errors_of(html, "num_frames")[0]
    assert errors_of(html, "infer_steps") == [] and errors_of(html, "image") == []
    assert ">too short</textarea>" in field_block(html, "prompt")
    assert 'value="30"' in field_block(html, "num_frames")
    assert not VideoJob.objects.exists()


def test_an_error_of_an_advanced_input_opens_the_advanced_section(client):
    response = client.post("/", {**GOOD_FORM, "guidance_scale": "99", "image": upload()})
    html = response.content.decode()
    assert errors_of(html, "guidance_scale") == ["Ensure this value is less than or equal to 20.0."]
    assert "<details open>" in html


def test_an_upload_that_is_not_an_image_is_refused_under_the_image_input(client):
    response = client.post("/", {**GOOD_FORM, "image": upload(b"just some text", "notes.png", "image/png")})
    assert response.status_code == 400
    with pytest.raises(ImageInputError) as refused:  # the reason the service gives for it
        services.submit_job(prompt=VALID_SUBMIT["prompt"], params={}, image_bytes=b"just some text")
    assert errors_of(response.content.decode(), "image") == [capfirst(refused.value.reason)]
    assert not VideoJob.objects.exists()


def test_a_submit_without_an_image_asks_for_one_under_the_image_input(client):
    response = client.post("/", GOOD_FORM)
    assert response.status_code == 400
    assert errors_of(response.content.decode(), "image") == ["Upload an image file, or give an image_url"]


def test_form_fields_over_the_memory_cap_answer_as_the_api_does(client, settings):
    # The page and the API map Django's refusals of a body the same way (issue 20, item 1).
    response = client.post("/", {**GOOD_FORM, "prompt": "x" * 1_000_000, "image": upload()})
    assert response.status_code == 413 and response.json()["error"] == "PAYLOAD_TOO_LARGE"
    many = {f"field{n}": "1" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    response = client.post("/", {**GOOD_FORM, **many, "image": upload()})
    assert response.status_code == 400 and "more than" in response.json()["message"]
    assert not VideoJob.objects.exists()


def test_a_full_queue_is_a_message_above_the_form(client, settings):
    settings.MAX_CONCURRENT_TASKS = 1
    make_job(owner="key:someone")
    response = client.post("/", {**GOOD_FORM, "image": upload()})
    assert response.status_code == 429
    assert re.search(r'<div class="alert" role="alert"><p>The server is busy \(1 unfinished jobs, limit 1\)',
                     response.content.decode())


def test_a_client_over_its_rate_is_refused_before_its_upload_is_decoded(client, settings, monkeypatch):
    settings.OWNER_SUBMITS_PER_MINUTE = 1
    assert client.post("/", {**GOOD_FORM, "image": upload()}).status_code == 302
    decoded, real = [], submit_service.normalize_image
    monkeypatch.setattr(submit_service, "normalize_image", lambda data, **kw: decoded.append(data) or real(data, **kw))
    response = client.post("/", {**GOOD_FORM, "image": upload(blank_1bit_png(6320, 6320))})  # 40 megapixels
    assert response.status_code == 429 and "in the last minute" in response.content.decode()
    assert decoded == [] and VideoJob.objects.count() == 1


def test_a_good_submit_redirects_to_the_job_page_with_the_job_filed_under_the_session_user(client, django_user_model):
    user = django_user_model.objects.create_user("ada", password="pw")
    client.force_login(user)
    response = client.post("/", {**GOOD_FORM, "seed": "7", "image": upload(png_bytes(640, 480))})
    job = VideoJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.request_id}"
    assert job.owner == f"user:{user.pk}"
    assert job.image_url == "" and job.phase == JobPhase.PREPARING  # the upload is stored as sent
    services.prepare_job_input(job_id=job.pk)  # its django-q2 task decodes it, out of the request
    assert job.params["image_size"] == "64*64" and job.params["num_frames"] == 25 and job.params["seed"] == 7
    page = client.get(response["Location"])
    assert page.status_code == 200 and VALID_SUBMIT["prompt"] in page.content.decode()
    # The input image comes back as a thumbnail, to its owner only.
    thumbnail = client.get(f"/jobs/{job.request_id}/input.png")
    assert thumbnail["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (320, 240)


def test_the_same_form_sent_twice_makes_one_job(client):
    form = {**GOOD_FORM, "form_key": "ab" * 16}
    first = client.post("/", {**form, "image": upload()})
    second = client.post("/", {**form, "image": upload()})
    assert first["Location"] == second["Location"]
    assert VideoJob.objects.count() == 1


def test_the_recent_jobs_list_shows_the_callers_jobs_with_thumbnails_and_states(client):
    mine, _ = services.submit_job(prompt="a lighthouse in a storm at night", params={"image_size": "64*64"},
                                  image_bytes=png_bytes())
    services.prepare_job_input(job_id=mine.pk)
    services.request_cancel(request_id=mine.request_id, owner="")
    make_job(prompt="somebody else's secret prompt", owner="key:other")
    html = client.get("/").content.decode()
    recent = html[html.index('id="recent"'):]
    assert "a lighthouse in a storm at night" in recent and "secret prompt" not in recent
    assert f'src="/jobs/{mine.request_id}/input.png"' in recent
    assert 'data-status="Cancelled">Cancelled</span>' in recent
    # Its own jobs have all ended (another owner's unfinished one does not count): no refresh.
    assert "hx-trigger" not in re.search(r'<section id="recent"[^>]*>', html).group(0)


def test_the_recent_jobs_list_refreshes_itself_while_one_of_them_is_unfinished(client):
    job = make_job()
    opening = re.search(r'<section id="recent"[^>]*>', client.get("/").content.decode()).group(0)
    assert 'hx-get="/jobs/recent" hx-trigger="every 2s"' in opening
    services.request_cancel(request_id=job.request_id, owner="")
    refreshed = client.get("/jobs/recent").content.decode()
    assert 'data-status="Cancelled"' in refreshed
    assert "hx-trigger" not in re.search(r'<section id="recent"[^>]*>', refreshed).group(0)


# --- the live panel ---------------------------------------------------------------------


def test_the_panel_of_a_running_job_shows_its_progress_and_polls_again(client):
    job = running_job()
    services.report_progress(job_id=job.pk, attempt=job.attempt, phase="denoising", step=5, total_steps=20)
    html = client.get(f"/jobs/{job.request_id}/panel").content.decode()
    assert 'hx-trigger="every 1s"' in html
    assert '<progress id="job-progress" max="100" value="26">' in html  # 5 % + 85 % of 5/20
    assert '<dd id="job-step">5 of 20</dd>' in html
    assert 'data-status="InProgress">In progress</span>' in html and "Denoising" in html
    assert 'id="cancel-button"' in html


def test_the_panel_of_a_queued_job_shows_its_place_in_the_queue(client):
    make_job(owner="key:other")
    job = make_job()
    html = client.get(f"/jobs/{job.request_id}/panel").content.decode()
    assert '<dd id="job-queue">2</dd>' in html


def test_the_panel_of_a_succeeded_job_shows_the_video_and_a_download_link_and_stops_polling(client):
    job = running_job()
    services.complete_job(job_id=job.pk, attempt=job.attempt, timings={},
                          result={"video_path": f"generated_videos/{job.request_id}.mp4", "frames": 25, "fps": 16,
                                  "resolution": "64*64", "duration_seconds": 1.5625, "size_bytes": 12345})
    html = client.get(f"/jobs/{job.request_id}/panel").content.decode()
    assert f'<video id="job-video" controls preload="metadata" playsinline src="/videos/{job.request_id}.mp4">' in html
    assert f'href="/videos/{job.request_id}.mp4" download' in html
    assert "hx-trigger" not in html and "cancel-button" not in html


def test_the_panel_of_a_failed_job_shows_the_reason(client):
    job = make_job()
    services.fail_input(job_id=job.pk, code="IMAGE_HTTP_ERROR", reason="image_url returned HTTP 404")
    html = client.get(f"/jobs/{job.request_id}/panel").content.decode()
    assert "Image_url returned HTTP 404 <code>IMAGE_HTTP_ERROR</code>" in html
    assert "hx-trigger" not in html and "<video" not in html


# --- cancel -----------------------------------------------------------------------------


def test_cancel_of_a_queued_job_answers_the_cancelled_panel(client):
    job = make_job()
    html = client.post(f"/jobs/{job.request_id}/cancel", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-status="Cancelled">Cancelled</span>' in html and "hx-trigger" not in html
    assert VideoJob.objects.get(pk=job.pk).status == "Cancelled"


def test_cancel_of_a_running_job_asks_the_daemon_and_keeps_polling(client):
    job = running_job()
    html = client.post(f"/jobs/{job.request_id}/cancel", HTTP_HX_REQUEST="true").content.decode()
    assert ">Cancelling</span>" in html and 'hx-trigger="every 1s"' in html and "cancel-button" not in html
    assert VideoJob.objects.get(pk=job.pk).cancel_requested_at is not None


def test_cancel_without_javascript_returns_to_the_job_page(client):
    job = make_job()
    response = client.post(f"/jobs/{job.request_id}/cancel")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.request_id}"


def test_cancel_of_a_finished_job_says_it_is_too_late(client):
    job = make_job()
    services.fail_input(job_id=job.pk, code="IMAGE_HTTP_ERROR", reason="gone")
    html = client.post(f"/jobs/{job.request_id}/cancel", HTTP_HX_REQUEST="true").content.decode()
    assert "Too late to cancel: the job already ended as Failed." in html


def test_cancel_without_the_csrf_token_is_refused(django_user_model):
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_user("ada", password="pw"))
    job = make_job(owner=f"user:{django_user_model.objects.get().pk}")
    assert client.post(f"/jobs/{job.request_id}/cancel").status_code == 403
    assert VideoJob.objects.get(pk=job.pk).status == "InQueue"


# --- owners and login -------------------------------------------------------------------


@pytest.mark.parametrize("method,route", [
    ("get", "/jobs/{id}"), ("get", "/jobs/{id}/panel"), ("get", "/jobs/{id}/input.png"), ("post", "/jobs/{id}/cancel"),
])
def test_another_owners_job_is_404_on_every_page_route(client, django_user_model, method, route):
    owner = django_user_model.objects.create_user("owner", password="pw")
    job, _ = services.submit_job(prompt=VALID_SUBMIT["prompt"], params={"image_size": "64*64"}, image_bytes=png_bytes(),
                                 owner=f"user:{owner.pk}")
    services.prepare_job_input(job_id=job.pk)  # its input image stored: there is one to refuse
    client.force_login(django_user_model.objects.create_user("intruder", password="pw"))
    response = getattr(client, method)(route.format(id=job.request_id))
    assert response.status_code == 404 and b"No such job" in response.content
    assert VideoJob.objects.get(pk=job.pk).status == "InQueue"
    client.logout()  # an anonymous visitor (owner "") does not see it either
    assert getattr(client, method)(route.format(id=job.request_id)).status_code == 404


def test_the_page_asks_for_a_login_where_api_keys_are_required(client, settings, django_user_model):
    settings.API_KEYS_REQUIRED = True
    job = make_job(owner="")
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/"
    assert client.post("/", {**GOOD_FORM, "image": upload()}).status_code == 302
    assert client.get(f"/jobs/{job.request_id}").status_code == 302
    # An htmx poll is told to move the whole page to the login form.
    poll = client.get(f"/jobs/{job.request_id}/panel", HTTP_HX_REQUEST="true")
    assert poll.status_code == 204 and poll["HX-Redirect"].startswith("/accounts/login/?next=")
    assert client.get("/accounts/login/").status_code == 200
    django_user_model.objects.create_user("ada", password="correct horse")
    login = client.post("/accounts/login/", {"username": "ada", "password": "correct horse"})
    assert login.status_code == 302 and login["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200 and b"ada" in page.content
    assert client.get(f"/jobs/{job.request_id}").status_code == 404  # the anonymous job is not ada's
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_the_page_leaves_sample_shift_empty_so_the_size_picks_the_official_shift(client):
    block = field_block(client.get("/").content.decode(), "sample_shift")
    assert 'value="5' not in block and "3 at 480p, 5 at 720p" in block
    assert client.post("/", {**GOOD_FORM, "image_size": "832*480", "sample_shift": "", "image": upload()}).status_code == 302
    assert VideoJob.objects.latest("created_at").params["sample_shift"] == 3.0


def test_the_form_offers_aspect_with_crop_by_default_and_loads_the_crop_preview(client):
    html = client.get("/").content.decode()
    block = field_block(html, "aspect")
    assertInHTML('<option value="crop" selected>crop</option>', block)
    assertInHTML('<option value="auto">auto</option>', block)
    # The preview is drawn by a static script (the CSP runs no inline one) on a canvas beside the image input.
    assert '<script src="/static/videojobs/crop-preview.js" defer></script>' in html
    assert 'id="crop-canvas"' in html[html.index('class="image-source"'):html.index("</fieldset>")]
    assert finders.find("videojobs/crop-preview.js")
    assert client.post("/", {**GOOD_FORM, "aspect": "auto", "image": upload(png_bytes(120, 80))}).status_code == 302
    job = VideoJob.objects.latest("created_at")
    assert job.params["aspect"] == "auto"
    services.prepare_job_input(job_id=job.pk)
    panel = client.get(f"/jobs/{job.request_id}/panel").content.decode()
    assertInHTML('<dd id="job-size">64*48</dd>', panel)
