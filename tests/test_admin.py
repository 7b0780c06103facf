"""The operators' admin: list, detail with the input image, cancel and requeue actions."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.conftest import make_job, make_ready_job, png_bytes
from videojobs import services
from videojobs.models import JobStatus, VideoJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = User.objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(user)
    return client


def test_job_list_shows_status_and_prompt_and_filters(operator):
    job = make_job(prompt="A lighthouse at dusk with waves crashing")
    response = operator.get("/admin/videojobs/videojob/?status__exact=InQueue&q=lighthouse")
    assert response.status_code == 200
    html = response.content.decode()
    assert job.request_id in html and "lighthouse" in html


def test_search_by_request_id(operator):
    job = make_job()
    other = make_job()
    html = operator.get(f"/admin/videojobs/videojob/?q={job.request_id}").content.decode()
    assert job.request_id in html and other.request_id not in html


def test_detail_is_read_only_and_shows_the_input_image(operator, settings):
    job = make_ready_job()
    path = Path(settings.MEDIA_ROOT) / job.input_image
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes())
    html = operator.get(f"/admin/videojobs/videojob/{job.pk}/change/").content.decode()
    assert f"/admin/videojobs/videojob/{job.pk}/input.png" in html
    assert 'name="_save"' not in html
    image = operator.get(f"/admin/videojobs/videojob/{job.pk}/input.png")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"


def test_input_image_needs_staff(client):
    job = make_ready_job()
    assert client.get(f"/admin/videojobs/videojob/{job.pk}/input.png").status_code == 302


def test_cancel_action_goes_through_the_service(operator):
    queued = make_job()
    operator.post("/admin/videojobs/videojob/", {"action": "cancel_jobs", "_selected_action": [queued.pk]})
    assert VideoJob.objects.get(pk=queued.pk).status == JobStatus.CANCELLED


def test_requeue_action_puts_a_failed_job_back(operator):
    make_ready_job()
    job = services.claim_next_job(worker="w1")
    services.fail_job(job_id=job.pk, attempt=job.attempt, code="X", reason="boom")
    operator.post("/admin/videojobs/videojob/", {"action": "requeue_jobs", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == JobStatus.IN_QUEUE and job.reason == ""


@pytest.mark.parametrize("query", [
    "created_at__year=99999999999999999999", "created_at__year=9999",
    "created_at__year=2026&created_at__month=99999999999999999999", "created_at__year=9999&created_at__month=12",
])
def test_a_date_past_the_calendar_in_the_date_filter_is_the_bad_filter_notice(operator, query):
    # Was a 500 (OverflowError, or ValueError for the year after 9999) inside Django's date hierarchy.
    make_job()
    response = operator.get(f"/admin/videojobs/videojob/?{query}")
    assert response.status_code == 302 and response["Location"] == "/admin/videojobs/videojob/?e=1"


@pytest.mark.parametrize("selected", ["abc", "\x00", "1e3"])
def test_an_action_on_a_selection_that_is_not_ids_does_nothing_and_says_so(operator, selected):
    # Was a 500: the selection went into the query as it came ("Field 'id' expected a number").
    job = make_job()
    response = operator.post("/admin/videojobs/videojob/", {"action": "cancel_jobs", "index": "0",
                                                           "_selected_action": [str(job.pk), selected]})
    assert response.status_code == 302
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.IN_QUEUE
    assert "not a row&#x27;s id" in operator.get(response["Location"]).content.decode()


def test_worker_list_renders(operator):
    services.register_worker(name="w1", host="h", pid=1, world_size=1, topology={}, device="cpu", model="tiny")
    assert "w1" in operator.get("/admin/videojobs/inferenceworker/").content.decode()
