"""GET /video/<requestId> (the status document by URL) and GET /video/jobs (the caller's jobs)."""
from __future__ import annotations

import pytest
from rest_framework_api_key.models import APIKey

from tests.conftest import make_job, make_ready_job
from videojobs import services
from videojobs.api.serializers import PAGE_MAX

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _room_for_many_jobs(settings):
    settings.MAX_CONCURRENT_TASKS = settings.OWNER_MAX_UNFINISHED = 100


def keyed(api, name: str):
    api_key, key = APIKey.objects.create_key(name=name)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return f"key:{api_key.prefix}"


def test_get_by_url_is_the_status_document(api):
    job = make_ready_job()
    by_get = api.get(f"/video/{job.request_id}")
    by_post = api.post("/video/status", {"requestId": job.request_id}, format="json")
    assert by_get.status_code == 200
    assert by_get.json() == by_post.json()
    assert by_get.json()["queue_position"] == 1


def test_get_of_unknown_malformed_or_another_clients_job_is_404(api):
    owner = keyed(api, "alice")
    mine = make_job(owner=owner)
    theirs = make_job(owner="key:someone")
    assert api.get(f"/video/{mine.request_id}").status_code == 200
    assert api.get(f"/video/{theirs.request_id}").status_code == 404
    assert api.get("/video/" + "0" * 32).status_code == 404
    assert api.get("/video/not-an-id").json()["error"] == "NOT_FOUND"


def test_job_list_is_the_callers_newest_first_paged(api):
    owner = keyed(api, "alice")
    ids = [make_job(owner=owner, prompt=f"job number {n} of the list").request_id for n in range(5)]
    make_job(owner="key:someone")
    first = api.get("/video/jobs", {"page_size": 2}).json()
    assert first["count"] == 5 and first["next_page"] == 2
    assert [row["requestId"] for row in first["results"]] == ids[::-1][:2]
    last = api.get("/video/jobs", {"page_size": 2, "page": 3}).json()
    assert [row["requestId"] for row in last["results"]] == [ids[0]]
    assert last["next_page"] is None


def test_job_list_filters_by_status_and_links_finished_videos(api):
    done = make_ready_job()
    claimed = services.claim_next_job(worker="w1", lease_seconds=60)
    services.complete_job(job_id=done.pk, attempt=claimed.attempt, result={"video_file": "x.mp4"}, timings={})
    queued = make_job()
    body = api.get("/video/jobs", {"status": "Succeed"}).json()
    assert [row["requestId"] for row in body["results"]] == [done.request_id]
    assert body["results"][0]["video_url"] == f"/videos/{done.request_id}.mp4"
    body = api.get("/video/jobs", {"status": "InQueue"}).json()
    assert [(row["requestId"], row["video_url"]) for row in body["results"]] == [(queued.request_id, None)]


@pytest.mark.parametrize("query", [{"status": "Done"}, {"page": 0}, {"page_size": 101}, {"page": "x"}])
def test_job_list_refuses_bad_query_parameters(api, query):
    response = api.get("/video/jobs", query)
    assert response.status_code == 400
    assert set(query) <= set(response.json()["fields"])


@pytest.mark.parametrize("query", [
    {"page": 9223372036854775807}, {"page": PAGE_MAX + 1}, {"page": "9" * 40}, {"page_size": 10**20},
])
def test_job_list_refuses_a_page_past_its_bound_naming_it(api, query):
    # Was a 500: Postgres refused the OFFSET ("bigint out of range"), issue 20, item 2.
    response = api.get("/video/jobs", query)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "VALIDATION_ERROR" and set(body["fields"]) == set(query)


def test_the_last_page_allowed_answers_an_empty_page(api):
    make_job()
    body = api.get("/video/jobs", {"page": PAGE_MAX, "page_size": 100}).json()
    assert (body["count"], body["results"], body["next_page"]) == (1, [], None)


def test_job_list_reads_a_bounded_number_of_queries(api, django_assert_max_num_queries):
    for n in range(30):
        make_ready_job(prompt=f"a prompt for job {n} of many")
    with django_assert_max_num_queries(4):
        assert len(api.get("/video/jobs", {"page_size": 25}).json()["results"]) == 25
