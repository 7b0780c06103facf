"""The live admin (issue 9): every job state renders with its story, the pages refresh themselves
only while something runs, the filters and search, the operator actions (list actions and the
job page's buttons), the workers page and the webhook deliveries."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from PIL import Image

from tests.conftest import make_job, make_ready_job, png_bytes
from videojobs import selectors, services
from videojobs.models import (
    DeliveryState,
    InferenceWorker,
    JobEvent,
    JobEventKind,
    JobPhase,
    JobStatus,
    VideoJob,
    WebhookDelivery,
)

pytestmark = pytest.mark.django_db

JOBS = "/admin/videojobs/videojob/"
WORKERS = "/admin/videojobs/inferenceworker/"
DELIVERIES = "/admin/videojobs/webhookdelivery/"
RELOAD = "window.location.reload()"

TOPOLOGY = {"world_size": 4, "ulysses_size": 2, "ring_size": 1, "cfg_size": 2, "dit_fsdp": True, "t5_fsdp": False,
            "t5_cpu": False, "vae_parallel": False, "device": "cuda", "attention_backend": "flash"}
ACCELERATION = {"cache": {"method": "attention", "reused_steps_per_pass": 6, "reused": {"cond": 240, "uncond": 240},
                          "computed": {"cond": 560, "uncond": 560}},
                "attention_backend": "flash", "prompt_cache_hits": 1}


def _cells(html: str, column: str) -> list[str]:
    """The texts of a read-only inline's column on a change page, in order."""
    return re.findall(rf'<td class="field-{column}">\s*<p>(.*?)</p>', html, flags=re.DOTALL)


# --- jobs in every state, made through the services ---------------------------------------


def _ready_with_stored_input(settings, **fields) -> VideoJob:
    """A queued job whose input image is on disk, as prepare_input leaves it."""
    job = make_ready_job(**fields)
    stored = Path(settings.MEDIA_ROOT) / job.input_image
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(png_bytes(color=(10, 200, 10)))
    return job


def _claimed(job: VideoJob, worker: str = "w1") -> VideoJob:
    claimed = services.claim_next_job(worker=worker)
    assert claimed.pk == job.pk
    return claimed


def _running(settings, worker: str = "w1", **fields) -> VideoJob:
    job = _claimed(_ready_with_stored_input(settings, **fields), worker)
    services.report_progress(job_id=job.pk, attempt=job.attempt, phase=JobPhase.DENOISING, step=5, total_steps=20)
    return VideoJob.objects.get(pk=job.pk)


def _succeeded(settings, worker: str = "w1", **fields) -> VideoJob:
    job = _running(settings, worker, **fields)
    folder = Path(settings.OUTPUT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job.request_id}.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"\0" * 64)
    result = {"video_path": f"generated_videos/{job.request_id}.mp4", "video_file": f"{job.request_id}.mp4",
              "frames": 25, "fps": 16, "resolution": "64*64", "seed": 7, "topology": TOPOLOGY,
              "acceleration": ACCELERATION, "warnings": ["requested cfg_size=1; this worker runs cfg_size=2"]}
    timings = {"encoding": 1.5, "denoising": 10.0, "decoding": 2.25, "saving": 0.25}
    assert services.complete_job(job_id=job.pk, attempt=job.attempt, result=result, timings=timings)
    return VideoJob.objects.get(pk=job.pk)


def _failed(settings, **fields) -> VideoJob:
    job = _running(settings, **fields)
    services.fail_job(job_id=job.pk, attempt=job.attempt, code="INFERENCE_ERROR", reason="CUDA out of memory",
                      timings={"encoding": 1.0})
    return VideoJob.objects.get(pk=job.pk)


def _input_failed(settings) -> VideoJob:
    job = make_job()
    services.fail_input(job_id=job.pk, code="IMAGE_HTTP_ERROR", reason="the image URL answered 404")
    return VideoJob.objects.get(pk=job.pk)


def _cancelled(settings) -> VideoJob:
    return services.request_cancel(request_id=make_job().request_id)


def _expired(settings) -> VideoJob:
    job = _succeeded(settings)
    assert services.enforce_output_quota(max_bytes=0) == 1
    return VideoJob.objects.get(pk=job.pk)


STATES = {
    "queued, preparing its input": lambda settings: make_job(),
    "queued, waiting for a worker": _ready_with_stored_input,
    "running": _running,
    "succeeded": _succeeded,
    "failed while running": _failed,
    "failed on its input": _input_failed,
    "cancelled": _cancelled,
    "succeeded, video expired": _expired,
}


@pytest.mark.parametrize("state", STATES)
def test_every_job_state_renders_in_the_list_and_on_its_page_with_its_history(admin_client, settings, state):
    job = STATES[state](settings)
    listing = admin_client.get(JOBS)
    assert listing.status_code == 200 and job.request_id in listing.content.decode()

    page = admin_client.get(f"{JOBS}{job.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert job.request_id in html and "Attempts and errors (every transition)" in html
    events = [JobEventKind(kind).label for kind in JobEvent.objects.filter(job=job).values_list("kind", flat=True)]
    assert events and _cells(html, "kind") == events
    assert ("<video" in html) == (state == "succeeded")


def test_succeeded_job_page_shows_video_timings_topology_and_cache_reuse(admin_client, settings):
    job = _succeeded(settings)
    html = admin_client.get(f"{JOBS}{job.pk}/change/").content.decode()

    assert f'<video src="/admin/videojobs/videojob/{job.pk}/video.mp4"' in html
    assert '<table class="timings">' in html
    # 10 s of denoising over 20 steps; the total of the four phases.
    assert "<td>denoising</td><td>10.00</td><td>0.50</td>" in html
    assert "<td>saving</td><td>0.25</td><td></td>" in html and "<th>14.00</th>" in html
    assert "4 ranks: ulysses 2 x ring 1 x cfg 2, fsdp dit (device cuda, attention flash)" in html
    assert "warning: requested cfg_size=1" in html
    assert "cache attention; 6 steps/pass reused (cond 240, uncond 240 attention outputs)" in html
    assert "<th>computed</th><td>cond 560, uncond 560</td>" in html and "<th>prompt_cache_hits</th><td>1</td>" in html

    video = admin_client.get(f"{JOBS}{job.pk}/video.mp4")
    assert video.status_code == 200 and video["Content-Type"] == "video/mp4"
    assert b"ftypmp42" in b"".join(video.streaming_content)


def test_expired_video_page_says_why_instead_of_a_player(admin_client, settings):
    job = _expired(settings)
    html = admin_client.get(f"{JOBS}{job.pk}/change/").content.decode()
    assert "<video" not in html and "MAX_OUTPUT_DIR_SIZE" in html
    assert admin_client.get(f"{JOBS}{job.pk}/video.mp4").status_code == 404


def test_job_page_lists_every_attempt_error_and_webhook_delivery(admin_client, settings):
    job = _running(settings)
    # The worker dies: the lease rescue requeues it; the second attempt fails.
    services.rescue_expired_leases(now=timezone.now() + timedelta(days=1))
    job = _claimed(job, worker="w2")
    services.fail_job(job_id=job.pk, attempt=job.attempt, code="INFERENCE_ERROR", reason="NaN in the latents")
    WebhookDelivery.objects.create(job=job, event="completed", url="https://hooks.example.com/v", state="failed",
                                   attempts=5, last_status_code=503, last_error="HTTP 503 from the receiver")

    html = admin_client.get(f"{JOBS}{job.pk}/change/").content.decode()
    assert _cells(html, "kind") == ["submitted", "input ready", "started", "requeued", "started", "failed"]
    assert _cells(html, "worker")[2:5] == ["w1", "-", "w2"]
    assert "worker w1 stopped responding during attempt 1" in _cells(html, "detail")
    assert _cells(html, "error_code")[-1] == "INFERENCE_ERROR" and "NaN in the latents" in _cells(html, "detail")
    [url] = _cells(html, "url")
    assert ">https://hooks.example.com/v</a>" in url
    assert _cells(html, "last_error") == ["HTTP 503 from the receiver"]


# --- auto refresh ----------------------------------------------------------------------------


def test_job_list_refreshes_itself_only_while_jobs_are_unfinished(admin_client, settings):
    _cancelled(settings)
    idle = admin_client.get(JOBS).content.decode()
    assert RELOAD not in idle and "Auto-refresh off" in idle

    make_job()
    live = admin_client.get(f"{JOBS}?status__exact=InQueue").content.decode()
    assert RELOAD in live and "Auto-refresh on (every 3 s)" in live
    # Pausing keeps the filters, and so does resuming.
    assert 'href="/admin/videojobs/videojob/?status__exact=InQueue&amp;norefresh=1">Pause' in live


def test_paused_job_list_keeps_its_filters_and_does_not_reload(admin_client):
    queued = make_job()
    response = admin_client.get(f"{JOBS}?status__exact=InQueue&norefresh=1")
    assert response.status_code == 200  # the pause flag is not taken for a field lookup
    html = response.content.decode()
    assert RELOAD not in html and "Auto-refresh paused" in html and queued.request_id in html
    assert 'href="/admin/videojobs/videojob/?status__exact=InQueue">Resume' in html


def test_job_page_refreshes_while_the_job_is_unfinished(admin_client, settings):
    running = _running(settings)
    assert RELOAD in admin_client.get(f"{JOBS}{running.pk}/change/").content.decode()
    assert RELOAD not in admin_client.get(f"{JOBS}{running.pk}/change/?norefresh=1").content.decode()
    done = _succeeded(settings)
    assert RELOAD not in admin_client.get(f"{JOBS}{done.pk}/change/").content.decode()


# --- filters and search --------------------------------------------------------------------------


def _listed(client, query: str) -> str:
    response = client.get(f"{JOBS}?{query}")
    assert response.status_code == 200 and "?e=1" not in response.get("Location", "")
    return response.content.decode()


def test_filters_by_status_phase_worker_and_owner(admin_client, settings):
    preparing = make_job(owner="alice")
    waiting = make_ready_job(owner="bob")
    running = _claimed(waiting, worker="gpu-a")
    other = _succeeded(settings, worker="gpu-b", owner="alice")

    html = _listed(admin_client, "status__exact=InProgress")
    assert running.request_id in html and preparing.request_id not in html and other.request_id not in html
    html = _listed(admin_client, "phase__exact=preparing")
    assert preparing.request_id in html and running.request_id not in html
    html = _listed(admin_client, "worker=gpu-b")
    assert other.request_id in html and running.request_id not in html and preparing.request_id not in html
    html = _listed(admin_client, "worker=__none__")
    assert preparing.request_id in html and running.request_id not in html and other.request_id not in html
    html = _listed(admin_client, "owner=alice")
    assert preparing.request_id in html and other.request_id in html and running.request_id not in html
    anonymous = make_job()
    html = _listed(admin_client, "owner=__none__")
    assert anonymous.request_id in html and preparing.request_id not in html


def test_search_by_request_id_prefix_and_by_prompt(admin_client):
    lighthouse = make_job(prompt="A lighthouse at dusk")
    cat = make_job(prompt="A cat on a surfboard")
    html = _listed(admin_client, f"q={lighthouse.request_id[:12]}")
    assert lighthouse.request_id in html and cat.request_id not in html
    html = _listed(admin_client, "q=surfboard")
    assert cat.request_id in html and lighthouse.request_id not in html


# --- actions -----------------------------------------------------------------------------------


def _act(client, action: str, *jobs) -> None:
    response = client.post(JOBS, {"action": action, "_selected_action": [job.pk for job in jobs]})
    assert response.status_code == 302


def test_retry_as_new_job_reuses_the_stored_input_and_leaves_the_original_alone(admin_client, settings):
    settings.WEBHOOK_SECRET = "s" * 40
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    original = _failed(settings, owner="alice", negative_prompt="blurry", webhook_url="http://127.0.0.1:9/hook",
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
    job = _claimed(original)
    services.request_cancel(request_id=job.request_id)
    services.finish_cancelled_job(job_id=job.pk, attempt=job.attempt)
    assert VideoJob.objects.get(pk=original.pk).status == JobStatus.CANCELLED

    admin_client.post(f"{JOBS}{original.pk}/retry/")
    new = VideoJob.objects.exclude(pk=original.pk).get()
    assert (new.status, new.phase, new.image_url) == (JobStatus.IN_QUEUE, JobPhase.WAITING, "")
    with Image.open(Path(settings.MEDIA_ROOT) / new.input_image) as image:
        assert image.getpixel((0, 0)) == (1, 2, 3)
    assert (Path(settings.MEDIA_ROOT) / original.input_image).is_file()


def test_retry_of_an_upload_whose_image_is_gone_is_refused(admin_client, settings):
    original = make_job(image_url="", image_bytes=png_bytes())
    services.request_cancel(request_id=original.request_id)
    (Path(settings.MEDIA_ROOT) / original.input_image).unlink()
    response = admin_client.post(f"{JOBS}{original.pk}/retry/", follow=True)
    assert "is gone; submit it again" in response.content.decode()
    assert VideoJob.objects.count() == 1


def test_retry_without_a_stored_input_fetches_the_image_url_again(admin_client, settings):
    original = _input_failed(settings)
    _act(admin_client, "retry_jobs", original)
    new = VideoJob.objects.exclude(pk=original.pk).get()
    assert (new.status, new.phase, new.image_url, new.input_ready_at) == (
        JobStatus.IN_QUEUE, JobPhase.PREPARING, original.image_url, None)


def test_retry_is_refused_for_unfinished_jobs_and_past_the_owners_limit(admin_client, settings):
    queued = make_job(owner="alice")
    _act(admin_client, "retry_jobs", queued)
    assert VideoJob.objects.count() == 1

    settings.OWNER_MAX_UNFINISHED = 1
    failed = _input_failed(settings)
    VideoJob.objects.filter(pk=failed.pk).update(owner="alice")
    response = admin_client.post(JOBS, {"action": "retry_jobs", "_selected_action": [failed.pk]}, follow=True)
    assert "unfinished jobs; the limit per client is 1" in response.content.decode()
    assert VideoJob.objects.count() == 2


def test_delete_output_removes_the_video_and_the_download_answers_410(admin_client, api, settings,
                                                                       django_capture_on_commit_callbacks):
    job = _succeeded(settings)
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
    running = _running(settings)
    _act(admin_client, "delete_outputs", running)
    assert VideoJob.objects.get(pk=running.pk).result == {}
    with pytest.raises(services.JobNotFinished):
        services.delete_job_output(job_id=running.pk)


def test_cancel_action_stops_queued_jobs_and_asks_running_ones_to_stop(admin_client, settings):
    running = _running(settings)
    queued = make_job()
    _act(admin_client, "cancel_jobs", running, queued)
    assert VideoJob.objects.get(pk=queued.pk).status == JobStatus.CANCELLED
    running.refresh_from_db()
    assert running.status == JobStatus.IN_PROGRESS and running.cancel_requested_at is not None


# --- the job page's buttons ----------------------------------------------------------------------


def test_job_page_offers_the_buttons_that_apply_to_its_state(admin_client, settings):
    queued = admin_client.get(f"{JOBS}{make_job().pk}/change/").content.decode()
    assert ">Cancel</button>" in queued and ">Delete output</button>" not in queued and "Retry as a new job" not in queued
    done = _succeeded(settings)
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

    done = _succeeded(settings)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"{JOBS}{done.pk}/delete-output/")
    assert not (Path(settings.OUTPUT_DIR) / f"{done.request_id}.mp4").exists()

    failed = _input_failed(settings)
    admin_client.post(f"{JOBS}{failed.pk}/requeue/")
    assert VideoJob.objects.get(pk=failed.pk).status == JobStatus.IN_QUEUE


def test_a_refused_button_says_why_and_changes_nothing(admin_client, settings):
    done = _succeeded(settings)
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


def _ran(job: VideoJob, *, worker: str, seconds: float, status: str = JobStatus.SUCCEED) -> None:
    """A finished job that ran ``seconds`` on ``worker`` (test setup of the history)."""
    start = timezone.now() - timedelta(hours=1)
    VideoJob.objects.filter(pk=job.pk).update(status=status, worker=worker, started_at=start,
                                              finished_at=start + timedelta(seconds=seconds))


def test_worker_mean_seconds_averages_succeeded_jobs_per_worker_in_one_query(django_assert_num_queries):
    for worker, seconds, status in [("w1", 10, JobStatus.SUCCEED), ("w1", 20, JobStatus.SUCCEED),
                                    ("w1", 500, JobStatus.FAILED), ("w2", 30.5, JobStatus.SUCCEED)]:
        _ran(make_job(), worker=worker, seconds=seconds, status=status)
    with django_assert_num_queries(1):
        means = selectors.worker_mean_seconds()
    assert means == pytest.approx({"w1": 15.0, "w2": 30.5})


def test_workers_page_shows_topology_state_current_job_heartbeat_and_mean_seconds(admin_client, settings):
    services.register_worker(name="w1", host="h", pid=1, world_size=4, topology=TOPOLOGY, device="cuda:0-3",
                             model="/models/Wan2.1-I2V-14B-720P")
    services.register_worker(name="w2", host="h", pid=2, world_size=1, topology={}, device="cpu", model="tiny")
    for seconds in (10, 20):
        _ran(make_job(), worker="w1", seconds=seconds)
    running = _running(settings, worker="w2")
    services.update_worker(name="w2", state="busy", current_job_id=running.pk)

    response = admin_client.get(WORKERS)
    assert response.status_code == 200
    html = response.content.decode()
    assert "4 ranks: ulysses 2 x ring 1 x cfg 2, fsdp dit" in html and "cuda:0-3" in html
    assert 'title="/models/Wan2.1-I2V-14B-720P">Wan2.1-I2V-14B-720P<' in html
    assert f'<a href="/admin/videojobs/videojob/{running.pk}/change/">{running.request_id}</a>' in html
    assert "<td class=\"field-mean_seconds_display\">15.0 s</td>" in html
    assert " s ago" in html and "loading" in html and "busy" in html
    assert RELOAD in html  # a job runs
    assert admin_client.get(f"{WORKERS}?norefresh=1").status_code == 200
    worker = InferenceWorker.objects.get(name="w1")
    assert "15.0 s" in admin_client.get(f"{WORKERS}{worker.pk}/change/").content.decode()


def test_workers_page_marks_a_silent_worker_stale_and_stops_refreshing_when_idle(admin_client, settings):
    services.register_worker(name="w1", host="h", pid=1, world_size=1, topology={}, device="cpu", model="tiny")
    services.update_worker(name="w1", state="idle")
    assert RELOAD not in admin_client.get(WORKERS).content.decode()
    InferenceWorker.objects.filter(name="w1").update(heartbeat_at=timezone.now() - timedelta(hours=2))
    html = admin_client.get(WORKERS).content.decode()
    assert "idle (stale)" in html and "hours ago" in html


# --- webhook deliveries -------------------------------------------------------------------------


def _delivery(job: VideoJob, **fields) -> WebhookDelivery:
    values = {"event": "completed", "url": "https://hooks.example.com/video", "payload": {"requestId": job.request_id,
              "status": job.status}, "state": DeliveryState.FAILED, "attempts": 2, "last_status_code": 500,
              "last_error": "HTTP 500", "log": [
                  {"at": "2025-01-01T10:00:00+00:00", "status_code": None, "error": "connection refused", "seconds": 0.01},
                  {"at": "2025-01-01T10:00:30+00:00", "status_code": 500, "error": "HTTP 500", "seconds": 0.2}]}
    return WebhookDelivery.objects.create(job=job, **{**values, **fields})


def test_delivery_list_filters_searches_and_links_the_job(admin_client):
    first, second = make_job(), make_job()
    failed = _delivery(first)
    delivered = _delivery(second, state=DeliveryState.DELIVERED, url="https://other.example.org/h", attempts=1)

    html = admin_client.get(DELIVERIES).content.decode()
    assert f'<a href="/admin/videojobs/videojob/{first.pk}/change/">{first.request_id}</a>' in html
    html = admin_client.get(f"{DELIVERIES}?state__exact=failed").content.decode()
    assert first.request_id in html and second.request_id not in html
    html = admin_client.get(f"{DELIVERIES}?event__exact=started").content.decode()
    assert first.request_id not in html and second.request_id not in html
    html = admin_client.get(f"{DELIVERIES}?q={second.request_id[:10]}").content.decode()
    assert second.request_id in html and first.request_id not in html
    html = admin_client.get(f"{DELIVERIES}?q=other.example.org").content.decode()
    assert f"/admin/videojobs/webhookdelivery/{delivered.pk}/change/" in html
    assert f"/admin/videojobs/webhookdelivery/{failed.pk}/change/" not in html


def test_delivery_page_shows_the_attempt_log_and_the_payload(admin_client):
    job = make_job()
    delivery = _delivery(job)
    html = admin_client.get(f"{DELIVERIES}{delivery.pk}/change/").content.decode()
    assert "<td>2025-01-01T10:00:00+00:00</td><td>-</td><td>connection refused</td><td>0.01</td>" in html
    assert "<td>500</td><td>HTTP 500</td><td>0.20</td>" in html
    assert f'<pre>{{\n  &quot;requestId&quot;: &quot;{job.request_id}&quot;,' in html


def test_deliver_again_sends_undelivered_deliveries_now_and_leaves_delivered_ones(
        admin_client, django_capture_on_commit_callbacks):
    job = make_job()
    failed = _delivery(job)
    delivered = _delivery(job, state=DeliveryState.DELIVERED, attempts=1)
    with django_capture_on_commit_callbacks() as sends:
        admin_client.post(DELIVERIES, {"action": "deliver_again", "_selected_action": [failed.pk, delivered.pk]})
    assert len(sends) == 1  # one send handed to django-q2
    failed.refresh_from_db()
    delivered.refresh_from_db()
    assert failed.state == DeliveryState.PENDING and failed.next_attempt_at <= timezone.now()
    assert (delivered.state, delivered.attempts, delivered.next_attempt_at) == (DeliveryState.DELIVERED, 1, None)
