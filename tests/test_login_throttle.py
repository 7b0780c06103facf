"""The login throttle on /accounts/login/ and /admin/login/ (django-axes, counted in the database):
per client address and per username, LOGIN_FAILURE_LIMIT failures within the window, then 429
and the form saying so, for the right password too, until the window has passed."""
from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.db.models import F, Sum
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
PASSWORD = "a long test password"
LOCKED = "Too many failed logins for this username or from this address. Try again in 15 minutes."


@pytest.fixture
def ada(django_user_model):
    return django_user_model.objects.create_user("ada", password=PASSWORD)


@pytest.fixture
def grace(django_user_model):
    return django_user_model.objects.create_user("grace", password=PASSWORD, is_staff=True, is_superuser=True)


def login(url: str, username: str, password: str, *, address: str = "127.0.0.1", **headers):
    return Client(REMOTE_ADDR=address).post(url, {"username": username, "password": password}, **headers)


def fail(times: int, *, url: str = LOGIN, username: str = "ada", address: str = "127.0.0.1", **headers):
    for _ in range(times):
        response = login(url, username, "wrong password", address=address, **headers)
        assert response.status_code == 200, response.status_code  # the form, "correct username and password"


def test_a_right_password_logs_in_after_fewer_failures_than_the_limit(ada):
    fail(4)
    response = login(LOGIN, "ada", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"


def test_the_fifth_failure_for_a_username_locks_it_out_from_every_address_with_429(ada, grace):
    for i in range(4):
        fail(1, address=f"198.51.100.{i + 1}")
    locked = login(LOGIN, "ada", "wrong password", address="198.51.100.9")
    assert locked.status_code == 429 and locked["Retry-After"] == "900"
    html = locked.content.decode()
    assert LOCKED in html and 'id="login-lockout"' in html
    assert '<form method="post" action="/accounts/login/">' in html and 'value="ada"' in html
    # The right password, from an address never seen before: still locked out.
    again = login(LOGIN, "ada", PASSWORD, address="203.0.113.50")
    assert again.status_code == 429 and "_auth_user_id" not in again.client.session
    # Another user logs in as usual.
    assert login(LOGIN, "grace", PASSWORD, address="203.0.113.50").status_code == 302


def test_failures_for_many_usernames_from_one_address_lock_that_address_out(ada):
    for name in ("root", "admin", "bob", "eve", "mallory"):
        response = login(LOGIN, name, "guess", address="192.0.2.7")
    assert response.status_code == 429 and LOCKED in response.content.decode()
    assert login(LOGIN, "ada", PASSWORD, address="192.0.2.7").status_code == 429
    assert login(LOGIN, "ada", PASSWORD, address="192.0.2.8").status_code == 302


def test_the_lockout_ends_when_the_window_has_passed(ada):
    fail(4)
    assert login(LOGIN, "ada", "wrong password").status_code == 429
    assert login(LOGIN, "ada", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=15, seconds=1))
    assert login(LOGIN, "ada", PASSWORD).status_code == 302


def test_the_counts_live_in_the_database_that_every_worker_shares(ada):
    # Each request from a fresh client, as gunicorn's workers each see some of them: the count is
    # the database's, so no worker can be asked the limit over again.
    fail(3)
    assert AccessAttempt.objects.filter(username="ada").aggregate(n=Sum("failures_since_start"))["n"] == 3


def test_the_admin_login_counts_with_the_site_login_and_answers_in_its_own_form(grace):
    fail(3, username="grace")
    fail(1, url=ADMIN_LOGIN, username="grace")
    locked = login(ADMIN_LOGIN, "grace", "wrong password")
    assert locked.status_code == 429 and locked["Retry-After"] == "900"
    html = locked.content.decode()
    assert f'<p class="errornote" role="alert" id="login-lockout">{LOCKED}</p>' in html
    assert 'id="login-form"' in html and 'action="/admin/login/"' in html
    assert '<input type="hidden" name="next" value="/admin/">' in html
    assert login(ADMIN_LOGIN, "grace", PASSWORD).status_code == 429
    assert login(LOGIN, "grace", PASSWORD).status_code == 429


def test_behind_the_proxy_the_address_counted_is_the_one_the_proxy_saw(ada, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    # nginx appends the address it saw; whatever the client wrote itself stands to its left.
    for i in range(5):
        response = login(LOGIN, f"guess{i}", "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}, 203.0.113.7")
    assert response.status_code == 429
    assert login(LOGIN, "ada", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    # Another client behind the same proxy (same REMOTE_ADDR) is not locked out.
    assert login(LOGIN, "ada", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 302


def test_a_nul_byte_in_the_username_is_a_form_error_not_a_500(ada):
    # The form refuses it before any login is tried or counted.
    assert login(LOGIN, "ada\x00", "wrong password").status_code == 200
    assert "Null characters are not allowed" in login(ADMIN_LOGIN, "ada\x00", "wrong password").content.decode()
    assert not AccessAttempt.objects.exists()
