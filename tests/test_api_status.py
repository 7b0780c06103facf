"""POST /video/status: the status document through a job's life."""
from __future__ import annotations

import pytest

from tests.conftest import make_job, make_ready_job
from videojobs import services

pytestmark = pytest.mark.django_db

URL = "/video/status"


def status(api, request_id):
    return api.post(URL, {"requestId": request_id}, format="json")


def test_new_job_is_in_queue_with_its_position(api):
    first = make_job()
    second = make_job()
    body = status(api, second.request_id).json()
    assert body["status"] == "InQueue"
    assert body["queue_position"] == 2
    assert body["progress"] == 0.0
    assert body["results"] is None and body["reason"] is None
    assert body["phase"] == "preparing"
    assert isinstance(body["created_at"], float) and isinstance(body["updated_at"], float)
    assert status(api, first.request_id).json()["queue_position"] == 1


def test_progress_rises_with_the_denoising_steps(api):
    job = make_ready_job()
    claimed = services.claim_next_job(worker="w1")
    seen = []
    for step in (1, 10, 20):
        services.report_progress(job_id=claimed.pk, attempt=claimed.attempt, phase="denoising", step=step, total_steps=20)
        body = status(api, job.request_id).json()
        assert body["status"] == "InProgress" and body["queue_position"] is None
        assert body["step"] == step and body["total_steps"] == 20
        seen.append(body["progress"])
    assert seen == sorted(seen) and seen[0] > 0 and seen[-1] < 1


def test_succeeded_job_reports_results_with_video_url(api):
    job = make_ready_job()
    claimed = services.claim_next_job(worker="w1")
    services.complete_job(
        job_id=claimed.pk,
        attempt=claimed.attempt,
        result={"video_file": f"{job.request_id}.mp4", "frames": 25, "fps": 16},
        timings={"denoising": 1.5},
    )
    body = status(api, job.request_id).json()
    assert body["status"] == "Succeed"
    assert body["progress"] == 1.0
    assert body["results"]["video_url"] == f"/videos/{job.request_id}.mp4"
    assert body["results"]["video_path"] == f"{job.request_id}.mp4"  # relative to the output folder
    assert body["results"]["timings"] == {"denoising": 1.5}


@pytest.mark.parametrize("stored", ["absolute path and file name", "absolute path only", "project-relative path"])
def test_a_job_stored_with_a_server_path_reports_its_video_relative_to_the_output_folder(api, settings, stored):
    # Rows written before issue 20 kept the daemon's path: absolute whenever OUTPUT_DIR was
    # outside the project folder (the production layout), else relative to the project.
    job = make_ready_job()
    claimed = services.claim_next_job(worker="w1")
    name = f"{job.request_id}.mp4"
    result = {
        "absolute path and file name": {"video_path": str(settings.OUTPUT_DIR / name), "video_file": name},
        "absolute path only": {"video_path": str(settings.OUTPUT_DIR / name)},
        "project-relative path": {"video_path": f"generated_videos/{name}", "video_file": name},
    }[stored]
    services.complete_job(job_id=claimed.pk, attempt=claimed.attempt, result={**result, "frames": 25}, timings={})
    response = status(api, job.request_id)
    assert response.json()["results"]["video_path"] == name
    assert response.json()["results"]["frames"] == 25
    assert str(settings.OUTPUT_DIR) not in response.content.decode()


def test_failed_job_reports_reason_and_code(api):
    job = make_job()
    services.fail_input(job_id=job.pk, code="IMAGE_HTTP_ERROR", reason="image_url returned HTTP 404")
    body = status(api, job.request_id).json()
    assert body["status"] == "Failed"
    assert body["reason"] == "image_url returned HTTP 404"
    assert body["error_code"] == "IMAGE_HTTP_ERROR"


@pytest.mark.parametrize("request_id", ["0" * 32, "not-an-id", "A" * 32, "../../etc/passwd"])
def test_unknown_or_malformed_request_id_is_404(api, request_id):
    response = status(api, request_id)
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


@pytest.mark.parametrize("request_id", [12345678901234567890123456789012, True, 1.5])
def test_a_request_id_that_is_not_a_json_string_is_400(api, request_id):
    response = status(api, request_id)
    assert response.status_code == 400
    assert response.json()["fields"]["requestId"][0].startswith("Must be a JSON string")


def test_missing_request_id_is_400(api):
    response = api.post(URL, {}, format="json")
    assert response.status_code == 400
    assert "requestId" in response.json()["message"]


def test_a_status_poll_is_one_query_with_the_queue_place(api, django_assert_num_queries):
    make_job()
    job = make_job()
    with django_assert_num_queries(1):
        body = status(api, job.request_id).json()
    assert body["queue_position"] == 2


def test_the_one_query_status_read_equals_the_orm_field_for_field():
    from videojobs import selectors

    job = make_ready_job(owner="key:abcd1234")
    claimed = services.claim_next_job(worker="w1")
    services.complete_job(job_id=claimed.pk, attempt=claimed.attempt, timings={"denoising": 1.5},
                          result={"video_file": "x.mp4", "frames": 25, "topology": {"world_size": 1}})
    orm = selectors.get_job(request_id=job.request_id, owner="key:abcd1234")
    fast = selectors.get_job_for_status(request_id=job.request_id, owner="key:abcd1234")
    for field in orm._meta.concrete_fields:
        assert getattr(fast, field.attname) == getattr(orm, field.attname), field.name
    assert fast.queue_ahead is None
    assert selectors.status_document(job=fast) == selectors.status_document(job=orm)
    # Another owner's job looks unknown, as through the ORM.
    with pytest.raises(type(orm).DoesNotExist):
        selectors.get_job_for_status(request_id=job.request_id, owner="key:other")
