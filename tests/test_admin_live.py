"""The live admin (issue 9): every job state renders with its story, the pages refresh themselves
only while something runs, the filters and search."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.admin_support import (
    JOBS,
    RELOAD,
    STATES,
    cancelled_job,
    cells,
    claim,
    expired_job,
    running_job,
    succeeded_job,
)
from tests.conftest import make_job, make_ready_job
from videojobs import services
from videojobs.models import (
    JobEvent,
    JobEventKind,
    WebhookDelivery,
)

pytestmark = pytest.mark.django_db


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
    assert events and cells(html, "kind") == events
    assert ("<video" in html) == (state == "succeeded")


def test_succeeded_job_page_shows_video_timings_topology_and_cache_reuse(admin_client, settings):
    job = succeeded_job(settings)
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
    job = expired_job(settings)
    html = admin_client.get(f"{JOBS}{job.pk}/change/").content.decode()
    assert "<video" not in html and "MAX_OUTPUT_DIR_SIZE" in html
    assert admin_client.get(f"{JOBS}{job.pk}/video.mp4").status_code == 404


def test_job_page_lists_every_attempt_error_and_webhook_delivery(admin_client, settings):
    job = running_job(settings)
    # The worker dies: the lease rescue requeues it; the second attempt fails.
    services.rescue_expired_leases(now=timezone.now() + timedelta(days=1))
    job = claim(job, worker="w2")
    services.fail_job(job_id=job.pk, attempt=job.attempt, code="INFERENCE_ERROR", reason="NaN in the latents")
    WebhookDelivery.objects.create(job=job, event="completed", url="https://hooks.example.com/v", state="failed",
                                   attempts=5, last_status_code=503, last_error="HTTP 503 from the receiver")

    html = admin_client.get(f"{JOBS}{job.pk}/change/").content.decode()
    assert cells(html, "kind") == ["submitted", "input ready", "started", "requeued", "started", "failed"]
    assert cells(html, "worker")[2:5] == ["w1", "-", "w2"]
    assert "worker w1 stopped responding during attempt 1" in cells(html, "detail")
    assert cells(html, "error_code")[-1] == "INFERENCE_ERROR" and "NaN in the latents" in cells(html, "detail")
    [url] = cells(html, "url")
    assert ">https://hooks.example.com/v</a>" in url
    assert cells(html, "last_error") == ["HTTP 503 from the receiver"]


# --- auto refresh ----------------------------------------------------------------------------


def test_job_list_refreshes_itself_only_while_jobs_are_unfinished(admin_client, settings):
    cancelled_job(settings)
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
    running = running_job(settings)
    assert RELOAD in admin_client.get(f"{JOBS}{running.pk}/change/").content.decode()
    assert RELOAD not in admin_client.get(f"{JOBS}{running.pk}/change/?norefresh=1").content.decode()
    done = succeeded_job(settings)
    assert RELOAD not in admin_client.get(f"{JOBS}{done.pk}/change/").content.decode()


# --- filters and search --------------------------------------------------------------------------


def _listed(client, query: str) -> str:
    response = client.get(f"{JOBS}?{query}")
    assert response.status_code == 200 and "?e=1" not in response.get("Location", "")
    return response.content.decode()


def test_filters_by_status_phase_worker_and_owner(admin_client, settings):
    preparing = make_job(owner="alice")
    waiting = make_ready_job(owner="bob")
    running = claim(waiting, worker="gpu-a")
    other = succeeded_job(settings, worker="gpu-b", owner="alice")

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
