"""API keys, owners and per-owner limits (issue 8, item 1)."""
from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey

from videojobs.models import VideoJob

pytestmark = pytest.mark.django_db
SUBMIT = {"prompt": "A white cat wearing sunglasses sits on a surfboard", "image_url": "https://example.com/a.jpg"}


def new_key(name: str = "client") -> str:
    out = io.StringIO()
    call_command("create_api_key", name, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def client(key: str | None = None) -> APIClient:
    api = APIClient()
    if key:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api


def submit(api: APIClient, **extra):
    return api.post("/video/submit", {**SUBMIT, **extra.pop("body", {})}, format="json", **extra)


def test_create_api_key_prints_a_key_that_is_stored_only_hashed():
    key = new_key("acme")
    stored = APIKey.objects.get(name="acme")
    assert key.startswith(stored.prefix + ".") and len(key) > 30
    assert key not in stored.hashed_key and stored.hashed_key.startswith("sha512$$")


def test_a_jobs_owner_is_its_key_and_other_callers_see_404():
    alice, bob = new_key("alice"), new_key("bob")
    request_id = submit(client(alice)).json()["requestId"]
    prefix = alice.split(".")[0]
    assert VideoJob.objects.get(request_id=request_id).owner == f"key:{prefix}"
    body = {"requestId": request_id}
    assert client(alice).post("/video/status", body, format="json").status_code == 200
    for other in (client(bob), client()):
        assert other.post("/video/status", body, format="json").status_code == 404
        assert other.post("/video/cancel", body, format="json").status_code == 404
    assert VideoJob.objects.get(request_id=request_id).cancel_requested_at is None
    assert client(alice).post("/video/cancel", body, format="json").json()["job_status"] == "Cancelled"


def test_a_bad_revoked_or_expired_key_is_a_401_asking_for_bearer():
    key = new_key()
    assert submit(client(key[:-1] + ("x" if key[-1] != "x" else "y"))).status_code == 401
    call_command("create_api_key", "--revoke", key.split(".")[0], stdout=io.StringIO())
    response = submit(client(key))
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"
    expiring = new_key("short")
    APIKey.objects.filter(name="short").update(expiry_date=timezone.now() - timedelta(seconds=1))
    assert submit(client(expiring)).status_code == 401


def test_keys_required_refuses_anonymous_callers_but_not_health(settings):
    settings.API_KEYS_REQUIRED = True
    response = submit(client())
    assert response.status_code == 401 and response.json()["error"] == "NOT_AUTHENTICATED"
    assert client().get("/health").status_code in (200, 503)
    assert client().get("/docs/schema").status_code == 200
    assert submit(client(new_key())).status_code == 202


def test_idempotency_keys_are_per_owner_and_bind_the_body():
    alice, bob = new_key("alice"), new_key("bob")
    first = submit(client(alice), HTTP_IDEMPOTENCY_KEY="order-17").json()["requestId"]
    assert submit(client(alice), HTTP_IDEMPOTENCY_KEY="order-17").json()["requestId"] == first
    assert submit(client(bob), HTTP_IDEMPOTENCY_KEY="order-17").json()["requestId"] != first
    conflict = submit(client(alice), HTTP_IDEMPOTENCY_KEY="order-17", body={"num_frames": 25})
    assert conflict.status_code == 409 and conflict.json()["error"] == "IDEMPOTENCY_CONFLICT"
    assert VideoJob.objects.count() == 2


def test_one_owner_cannot_take_every_slot(settings):
    settings.MAX_CONCURRENT_TASKS, settings.OWNER_MAX_UNFINISHED = 5, 2
    greedy, other = client(new_key("greedy")), client(new_key("other"))
    assert [submit(greedy).status_code for _ in range(3)] == [202, 202, 429]
    limited = submit(greedy)
    assert limited.json()["error"] == "OWNER_LIMIT" and int(limited["Retry-After"]) > 0
    assert submit(other).status_code == 202


def test_submits_per_minute_are_limited_per_owner(settings):
    settings.OWNER_SUBMITS_PER_MINUTE = 3
    api = client(new_key())
    for _ in range(3):
        request_id = submit(api).json()["requestId"]
        VideoJob.objects.filter(request_id=request_id).update(status="Succeed")  # not "unfinished"
    response = submit(api)
    assert response.status_code == 429 and response.json()["error"] == "OWNER_LIMIT"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert submit(client(new_key("another"))).status_code == 202


def test_the_rate_limit_reopens_when_the_oldest_counted_submit_leaves_the_minute(settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.OWNER_SUBMITS_PER_MINUTE = 3
    api = client(new_key())
    ids = [submit(api).json()["requestId"] for _ in range(3)]
    VideoJob.objects.filter(request_id__in=ids).update(status="Succeed")
    # 50 s ago, 40 s ago, 30 s ago: the slot opens when the one 50 s old turns 60, in 10 s.
    for age, request_id in zip((50, 40, 30), ids):
        VideoJob.objects.filter(request_id=request_id).update(created_at=timezone.now() - timedelta(seconds=age))
    response = submit(api)
    assert response.status_code == 429 and 9 <= int(response["Retry-After"]) <= 11
    VideoJob.objects.filter(request_id=ids[0]).update(created_at=timezone.now() - timedelta(seconds=61))
    assert submit(api).status_code == 202


def test_videos_are_served_to_their_owner_only(settings):
    alice, bob = new_key("alice"), new_key("bob")
    request_id = submit(client(alice)).json()["requestId"]
    VideoJob.objects.filter(request_id=request_id).update(status="Succeed", result={"frames": 1})
    Path(settings.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    (Path(settings.OUTPUT_DIR) / f"{request_id}.mp4").write_bytes(b"\0" * 10)
    assert client(alice).get(f"/videos/{request_id}.mp4").status_code == 200
    assert client(bob).get(f"/videos/{request_id}.mp4").status_code == 404


def test_a_logged_in_user_owns_the_jobs_of_its_session(django_user_model):
    user = django_user_model.objects.create_user("visitor", password="x")
    api = APIClient()
    api.force_login(user)
    request_id = submit(api).json()["requestId"]
    assert VideoJob.objects.get(request_id=request_id).owner == f"user:{user.pk}"
    assert client().post("/video/status", {"requestId": request_id}, format="json").status_code == 404


def test_a_session_post_without_the_csrf_token_is_refused(django_user_model):
    user = django_user_model.objects.create_user("visitor", password="x")
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(user)
    assert submit(api).status_code == 403
    assert not VideoJob.objects.exists()
