"""While Postgres is down or restarting, every endpoint answers 503 JSON with Retry-After, never a
500 (issue 8, item 3). The real outage is in test_supervisor_faults; here each path on its own."""
from __future__ import annotations

import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client

from videojobs import selectors, services
from videojobs.api import health

pytestmark = pytest.mark.django_db

REFUSED = OperationalError('connection to server on socket "/srv/pg/.s.PGSQL.5432" failed: Connection refused')


def _down(*args, **kwargs):
    raise REFUSED


def _assert_unavailable(response) -> None:
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    body = response.json()
    assert body["error"] == "DATABASE_UNAVAILABLE"
    assert "retry" in body["message"]
    assert "/srv/pg" not in response.content.decode()  # no server path reaches a client


def test_submit_answers_503_with_retry_after_while_the_database_is_unreachable(api, valid_submit, monkeypatch):
    monkeypatch.setattr(services, "submit_job", _down)
    _assert_unavailable(api.post("/video/submit", valid_submit, format="json"))


def test_status_answers_503_while_the_database_is_unreachable(api, monkeypatch):
    monkeypatch.setattr(selectors, "get_job_for_status", _down)
    _assert_unavailable(api.post("/video/status", {"requestId": "a" * 32}, format="json"))


def test_a_closed_connection_is_unavailable_too(api, monkeypatch):
    def closed(**kwargs):
        raise InterfaceError("connection already closed")

    monkeypatch.setattr(services, "request_cancel", closed)
    _assert_unavailable(api.post("/video/cancel", {"requestId": "a" * 32}, format="json"))


def test_metrics_answer_503_while_the_database_is_unreachable(api, monkeypatch):
    monkeypatch.setattr(selectors, "status_counts", _down)
    _assert_unavailable(api.get("/metrics"))


def test_health_says_the_database_is_why_and_when_to_come_back(api, monkeypatch):
    monkeypatch.setattr(health, "service_block", _down)
    response = api.get("/health")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["status"] == "unhealthy" and "database unreachable" in response.json()["reason"]


def test_a_database_failure_outside_the_api_is_a_503_not_a_500(monkeypatch):
    # The admin reads the session row before any view runs: Django's own handler500 path.
    from django.contrib.sessions.backends.db import SessionStore

    monkeypatch.setattr(SessionStore, "_get_session_from_db", _down)
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "x" * 32
    _assert_unavailable(client.get("/admin/"))


def test_other_failures_stay_a_plain_500_without_detail(monkeypatch):
    from django.contrib.sessions.backends.db import SessionStore

    def broken(*args, **kwargs):
        raise RuntimeError("/srv/secret/path exploded")

    monkeypatch.setattr(SessionStore, "_get_session_from_db", broken)
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "x" * 32
    response = client.get("/admin/")
    assert response.status_code == 500
    assert response.json() == {"error": "INTERNAL_ERROR", "message": "internal error"}
