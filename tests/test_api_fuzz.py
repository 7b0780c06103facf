"""The API fuzzed from its own OpenAPI schema (issue 20, last paragraph).

schemathesis reads the committed schema (docs/openapi.yaml, which
tests/test_api_health_metrics_docs.py keeps equal to what /docs/schema serves), generates
requests for every operation (valid ones, and invalid ones: wrong types, missing fields,
boundary and out-of-range numbers, odd strings in paths, queries and bodies, uploads) and
sends them over HTTP to pytest-django's live server with an API key, as production requires.
Each response is checked: never a 5xx, a status code, a content type and a body that the
schema documents for the operation, an invalid request refused with a 4xx, and a request
without the key refused (schemathesis' ignored_auth sends that one itself).

Bounded and reproducible (see CONFIG), and offline: nothing leaves 127.0.0.1 (see
FAKE_PUBLIC_ADDRESS; image_url is fetched by a django-q2 task that no test runs here).
"""
from __future__ import annotations

import io
import ipaddress
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
from django.core.management import call_command
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.admin_support import failed_job, ready_with_stored_input, running_job, succeeded_job
from tests.conftest import make_job
from videojobs import services

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
# Bounded and reproducible: a fixed seed, derandomized, no example database. Per operation:
# schemathesis' coverage phase (each parameter's and property's boundary and invalid values,
# some hundreds of requests for the submit), then EXAMPLES random ones, valid and invalid. The
# job list gets more: it is cheap, and a page number past bigint is a random draw's find.
EXAMPLES = 25
CONFIG = f"""
seed = 20
suppress-health-check = ["all"]

[generation]
mode = "all"
max-examples = {EXAMPLES}
deterministic = true
database = "none"
# The Authorization header is the test's own (a real key); generated ones would only be 401s.
with-security-parameters = false

[phases.stateful]
enabled = false

[[operations]]
include-path = "/video/jobs"
generation.max-examples = {6 * EXAMPLES}
"""
schema = schemathesis.openapi.from_path(SCHEMA_PATH, config=schemathesis.Config.from_str(CONFIG))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


# --- the fuzzing run ---------------------------------------------------------------------


# Where every host name but localhost "resolves" in this test, without DNS: a public address,
# so that a generated webhook_url passes the address rules as a real one would. Nothing
# connects to it: webhooks go out only when a job runs, and no job runs here.
FAKE_PUBLIC_ADDRESS = "93.184.215.14"


def _offline_getaddrinfo(real):
    """getaddrinfo without DNS: IP literals and localhost (the live server) as usual, any other
    name as FAKE_PUBLIC_ADDRESS."""

    def lookup(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name != "localhost":
            try:
                ipaddress.ip_address(name.split("%", 1)[0])
            except ValueError:
                host = FAKE_PUBLIC_ADDRESS
        return real(host, port, *args, **kwargs)

    return lookup


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _offline_getaddrinfo(socket.getaddrinfo))


@pytest.fixture
def api_key(settings) -> str:
    settings.API_KEYS_REQUIRED = True
    out = io.StringIO()
    call_command("create_api_key", "fuzzer", stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def excluded_checks(case, response) -> list:
    """Checks that do not apply to this exchange, by the API's documented conventions."""
    excluded = []
    if response.status_code == 503 and "503" in case.operation.responses.status_codes:
        excluded.append(not_a_server_error)  # /health's documented answer: no inference worker is ready
    # A query parameter is read by its last value (Django's QueryDict), and an empty one is the
    # same as an absent one: "?status=" lists every job, "?page=x&page=" the first page.
    sent = parse_qs(urlsplit(response.request.url).query, keep_blank_values=True)
    if any(values[-1] == "" for values in sent.values()):
        excluded.append(negative_data_rejection)
    return excluded


@pytest.fixture
def no_admission_limits(settings):
    """A 429 must not hide how a request would otherwise have been answered."""
    settings.MAX_CONCURRENT_TASKS = settings.OWNER_MAX_UNFINISHED = settings.OWNER_SUBMITS_PER_MINUTE = 10**6


@pytest.mark.slow  # about a minute on 2 cores
@schema.parametrize()
def test_every_operation_answers_fuzzed_requests_as_its_schema_says(case, live_server, api_key, offline,
                                                                     no_admission_limits):
    headers = {"Authorization": f"Bearer {api_key}"}
    response = case.call(base_url=live_server.url, headers=headers)
    excluded = excluded_checks(case, response)
    case.validate_response(response, checks=CHECKS, excluded_checks=excluded, headers=headers)


# --- the same checks on jobs in every state -----------------------------------------------
# Generated ids name no job (404); these requests name real ones, so that the status
# documents, the list's rows, a cancel and a download are checked against the schema too.


def jobs_in_every_state(settings, owner: str) -> list[str]:
    """One job per state for this owner. The claimed ones first: a claim takes the oldest ready job."""
    settings.MAX_CONCURRENT_TASKS = settings.OWNER_MAX_UNFINISHED = 100
    expired = succeeded_job(settings, owner=owner)
    assert services.enforce_output_quota(max_bytes=0) == 1  # its video deleted: 410
    jobs = [expired, succeeded_job(settings, owner=owner), failed_job(settings, owner=owner),
            running_job(settings, owner=owner), ready_with_stored_input(settings, owner=owner), make_job(owner=owner)]
    input_failed = make_job(owner=owner)
    services.fail_input(job_id=input_failed.pk, code="IMAGE_HTTP_ERROR", reason="the image URL answered 404")
    cancelled = services.request_cancel(request_id=make_job(owner=owner).request_id)
    return [job.request_id for job in (*jobs, input_failed, cancelled)]


def _answers_held_to_the_schema(cases, live_server, headers) -> set[tuple[str, int]]:
    """Call every case, check each answer against the schema; the (operation, status) pairs seen.
    The schema's security is production's: where keys are not required, anonymous calls pass."""
    excluded = [] if headers else [ignored_auth]
    statuses = set()
    for case in cases:
        response = case.call(base_url=live_server.url, headers=headers)
        case.validate_response(response, checks=CHECKS, excluded_checks=excluded, headers=headers)
        statuses.add((case.operation.label, response.status_code))
    return statuses


@pytest.fixture(params=["api key", "anonymous"])
def caller(request, settings) -> tuple[str, dict]:
    """(owner, headers): a key where keys are required (production), nobody where they are not."""
    if request.param == "anonymous":
        settings.API_KEYS_REQUIRED = False
        return "", {}
    key = request.getfixturevalue("api_key")
    return f"key:{key.split('.')[0]}", {"Authorization": f"Bearer {key}"}


def test_jobs_in_every_state_answer_as_the_schema_says(live_server, settings, caller):
    owner, headers = caller
    request_ids = jobs_in_every_state(settings, owner=owner)
    cases = [schema["/video/jobs"]["GET"].Case(query=query) for query in
             ({}, {"page_size": 3}, {"page": 2, "page_size": 3}, {"status": "Succeed"}, {"status": "InQueue"})]
    for request_id in request_ids:
        cases += [
            schema["/video/{request_id}"]["GET"].Case(path_parameters={"request_id": request_id}),
            schema["/video/status"]["POST"].Case(body={"requestId": request_id}, media_type="application/json"),
            schema["/videos/{request_id}.mp4"]["GET"].Case(path_parameters={"request_id": request_id}),
            schema["/video/cancel"]["POST"].Case(body={"requestId": request_id}, media_type="application/json"),
        ]
    statuses = _answers_held_to_the_schema(cases, live_server, headers)
    # Each kind of answer was reached: a document, a list, a download, a deleted video, both cancels.
    assert {("GET /video/{request_id}", 200), ("POST /video/status", 200), ("GET /video/jobs", 200),
            ("GET /videos/{request_id}.mp4", 200), ("GET /videos/{request_id}.mp4", 410),
            ("POST /video/cancel", 200), ("POST /video/cancel", 409)} <= statuses


def test_videos_in_every_state_answer_v1_as_the_schema_says(live_server, settings, caller):
    """The OpenAI-compatible API (/v1) on the same jobs: each Video object, the list, every
    content variant (a video, 409 before the end or without a video, 410 once expired), a remix
    and a delete, held to the schema."""
    owner, headers = caller
    request_ids = jobs_in_every_state(settings, owner=owner)
    videos = schema["/v1/videos"]
    cases = [videos["GET"].Case(query=query) for query in ({}, {"limit": 2}, {"order": "asc", "limit": 3})]
    for request_id in request_ids:
        path = {"video_id": f"video_{request_id}"}
        cases += [schema["/v1/videos/{video_id}"]["GET"].Case(path_parameters=path)]
        cases += [schema["/v1/videos/{video_id}/content"]["GET"].Case(path_parameters=path, query={"variant": variant})
                  for variant in ("video", "thumbnail", "spritesheet")]
    cases += [schema["/v1/videos/{video_id}/remix"]["POST"].Case(
        path_parameters={"video_id": request_ids[1]}, body={"prompt": "the same scene, at night"},
        media_type="application/json"),
        schema["/v1/videos/{video_id}"]["DELETE"].Case(path_parameters={"video_id": request_ids[1]})]
    statuses = _answers_held_to_the_schema(cases, live_server, headers)
    assert {("GET /v1/videos/{video_id}", 200), ("GET /v1/videos/{video_id}/content", 200),
            ("GET /v1/videos/{video_id}/content", 409), ("GET /v1/videos/{video_id}/content", 410),
            ("POST /v1/videos/{video_id}/remix", 200), ("DELETE /v1/videos/{video_id}", 200),
            ("GET /v1/videos", 200)} <= statuses, statuses
