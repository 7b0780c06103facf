"""The admin's operator actions (issue 9): list actions and the job page's buttons, each through
a service, each refusal saying why."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from PIL import Image

from tests.admin_support import (
    JOBS,
    claim,
    failed_job,
    input_failed_job,
    running_job,
    succeeded_job,
)
from tests.conftest import make_job, png_bytes
from videojobs import errors, services
from videojobs.models import (
    JobPhase,
    JobStatus,
    VideoJob,
)

pytestmark = pytest.mark.django_db


def _act(client, action: str, *jobs) -> None:
    response = client.post(JOBS, {"action": action, "_selected_action": [job.pk for job in jobs]})
    assert response.status_code == 302


def test_retry_as_new_job_reuses_the_stored_input_and_leaves_the_original_alone(admin_client, settings):
    settings.WEBHOOK_SECRET = "s" * 40
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    original = failed_job(settings, owner="alice", negative_prompt="blurry", webhook_url="http://127.0.0.1:9/hook",
                       webhook_events=["started", "completed"])
    before = VideoJob.objects.filter(pk=original.pk).values().get()

    _act(admin_client, "retry_jobs", original)

    new = VideoJob.objects.exclude(pk=original.pk).get()
    assert (new.prompt, new.negative_prompt, new.params, new.owner) == (
        original.prompt, original.negative_prompt, original.params, "alice")
    assert (new.webhook_url, new.webhook_events) == ("http://127.0.0.1:9/hook", ["started", "completed"])
    assert new.image_url == original.image_url  # where the input came from, kept
    assert (new.status, new.phase, new.attempt) == (JobStatus.IN_QUEUE, JobPhase.WAITING, 0)
    assert new.input_ready_at is not None and new.input_image == f"inputs/{new.request_id}.png"
    with Image.open(Path(settings.MEDIA_ROOT) / new.input_image) as image:
        assert image.getpixel((0, 0)) == (10, 200, 10)
    assert f"retry of {original.request_id}" in new.events.get(kind="submitted").detail
    assert services.prepare_job_input(job_id=new.pk) is None  # its input task will not fetch again
    assert VideoJob.objects.filter(pk=original.pk).values().get() == before


def test_retry_of_an_uploaded_input_submits_the_stored_image_as_an_upload(admin_client, settings):
    original = make_job(image_url="", image_bytes=png_bytes(color=(1, 2, 3)))
    services.prepare_job_input(job_id=original.pk)
    job = claim(original)
    services.request_cancel(request_id=job.request_id)
    services.finish_cancelled_job(job_id=job.pk, attempt=job.attempt)
    assert VideoJob.objects.get(pk=original.pk).status == JobStatus.CANCELLED

    admin_client.post(f"{JOBS}{original.pk}/retry/")
    new = VideoJob.objects.exclude(pk=original.pk).get()
    assert (new.status, new.phase, new.image_url) == (JobStatus.IN_QUEUE, JobPhase.WAITING, "")
    with Image.open(Path(settings.MEDIA_ROOT) / new.input_image) as image:
        assert image.getpixel((0, 0)) == (1, 2, 3)
    original.refresh_from_db()
    assert (Path(settings.MEDIA_ROOT) / original.input_image).is_file()
    # Decoded already: ready at once, and no copy of it waits for an input task.
    assert sorted(p.name for p in (Path(settings.MEDIA_ROOT) / "inputs").iterdir()) == sorted(
        [f"{original.request_id}.png", f"{new.request_id}.png"])
    assert services.prepare_job_input(job_id=new.pk) is None


def test_retry_of_an_upload_whose_image_is_gone_is_refused(admin_client, settings):
    original = make_job(image_url="", image_bytes=png_bytes())
    services.prepare_job_input(job_id=original.pk)
    services.request_cancel(request_id=original.request_id)
    original.refresh_from_db()
    (Path(settings.MEDIA_ROOT) / original.input_image).unlink()
    response = admin_client.post(f"{JOBS}{original.pk}/retry/", follow=True)
    assert "is gone; submit it again" in response.content.decode()
    assert VideoJob.objects.count() == 1


def test_retry_without_a_stored_input_fetches_the_image_url_again(admin_client, settings):
    original = input_failed_job(settings)
    _act(admin_client, "retry_jobs", original)
    new = VideoJob.objects.exclude(pk=original.pk).get()
    assert (new.status, new.phase, new.image_url, new.input_ready_at) == (
        JobStatus.IN_QUEUE, JobPhase.PREPARING, original.image_url, None)


def test_retry_is_refused_for_unfinished_jobs_and_past_the_owners_limit(admin_client, settings):
    queued = make_job(owner="alice")
    _act(admin_client, "retry_jobs", queued)
    assert VideoJob.objects.count() == 1

    settings.OWNER_MAX_UNFINISHED = 1
    failed = input_failed_job(settings)
    VideoJob.objects.filter(pk=failed.pk).update(owner="alice")
    response = admin_client.post(JOBS, {"action": "retry_jobs", "_selected_action": [failed.pk]}, follow=True)
    assert "unfinished jobs; the limit per client is 1" in response.content.decode()
    assert VideoJob.objects.count() == 2


def test_delete_output_removes_the_video_and_the_download_answers_410(admin_client, api, settings,
                                                                       django_capture_on_commit_callbacks):
    job = succeeded_job(settings)
    video = Path(settings.OUTPUT_DIR) / f"{job.request_id}.mp4"
    with django_capture_on_commit_callbacks(execute=True):
        _act(admin_client, "delete_outputs", job)
    job.refresh_from_db()
    assert not video.exists()
    assert job.result["expired"] is True and "deleted by an operator" in job.result["expired_reason"]
    assert job.result["frames"] == 25 and Path(settings.MEDIA_ROOT, job.input_image).is_file()
    response = api.get(f"/videos/{job.request_id}.mp4")
    assert response.status_code == 410 and "deleted by an operator" in response.json()["message"]


def test_delete_output_refuses_unfinished_jobs(admin_client, settings):
    running = running_job(settings)
    _act(admin_client, "delete_outputs", running)
    assert VideoJob.objects.get(pk=running.pk).result == {}
    with pytest.raises(errors.JobNotFinished):
        services.delete_job_output(job_id=running.pk)


def test_cancel_action_stops_queued_jobs_and_asks_running_ones_to_stop(admin_client, settings):
    running = running_job(settings)
    queued = make_job()
    _act(admin_client, "cancel_jobs", running, queued)
    assert VideoJob.objects.get(pk=queued.pk).status == JobStatus.CANCELLED
    running.refresh_from_db()
    assert running.status == JobStatus.IN_PROGRESS and running.cancel_requested_at is not None


# --- the job page's buttons ----------------------------------------------------------------------


def test_job_page_offers_the_buttons_that_apply_to_its_state(admin_client, settings):
    queued = admin_client.get(f"{JOBS}{make_job().pk}/change/").content.decode()
    assert ">Cancel</button>" in queued and ">Delete output</button>" not in queued and "Retry as a new job" not in queued
    done = succeeded_job(settings)
    html = admin_client.get(f"{JOBS}{done.pk}/change/").content.decode()
    assert ">Cancel</button>" not in html
    assert f'action="/admin/videojobs/videojob/{done.pk}/retry/"' in html
    assert f'action="/admin/videojobs/videojob/{done.pk}/delete-output/"' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_job_page_buttons_post_and_work(admin_client, settings, django_capture_on_commit_callbacks):
    queued = make_job()
    response = admin_client.post(f"{JOBS}{queued.pk}/cancel/")
    assert response.status_code == 302 and response["Location"] == f"{JOBS}{queued.pk}/change/"
    assert VideoJob.objects.get(pk=queued.pk).status == JobStatus.CANCELLED

    response = admin_client.post(f"{JOBS}{queued.pk}/retry/")
    new = VideoJob.objects.exclude(pk=queued.pk).get()
    assert response["Location"] == f"{JOBS}{new.pk}/change/"  # the operator watches the new job

    done = succeeded_job(settings)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"{JOBS}{done.pk}/delete-output/")
    assert not (Path(settings.OUTPUT_DIR) / f"{done.request_id}.mp4").exists()

    failed = input_failed_job(settings)
    admin_client.post(f"{JOBS}{failed.pk}/requeue/")
    assert VideoJob.objects.get(pk=failed.pk).status == JobStatus.IN_QUEUE


def test_a_refused_button_says_why_and_changes_nothing(admin_client, settings):
    done = succeeded_job(settings)
    response = admin_client.post(f"{JOBS}{done.pk}/cancel/", follow=True)
    assert "already ended as Succeed" in response.content.decode()
    assert VideoJob.objects.get(pk=done.pk).status == JobStatus.SUCCEED


@pytest.mark.parametrize("route", ["cancel/", "retry/", "delete-output/", "requeue/"])
def test_job_page_buttons_refuse_get(admin_client, route):
    job = make_job()
    assert admin_client.get(f"{JOBS}{job.pk}/{route}").status_code == 405
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.IN_QUEUE


def test_job_page_buttons_need_the_csrf_token():
    job = make_job()
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("op", "op@example.com", "pw"))
    assert client.post(f"{JOBS}{job.pk}/cancel/").status_code == 403
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.IN_QUEUE


@pytest.mark.parametrize("route", ["cancel/", "retry/", "delete-output/", "requeue/", "video.mp4"])
def test_the_new_urls_send_anyone_but_staff_to_the_login(client, route):
    job = make_job()
    for visitor in ("anonymous", "plain user"):
        if visitor == "plain user":
            client.force_login(User.objects.create_user("someone", password="pw"))
        response = client.post(f"{JOBS}{job.pk}/{route}")
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), visitor
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.IN_QUEUE


# --- workers -----------------------------------------------------------------------------------
