"""The Content-Security-Policy (django-csp) of the job page, the login, the admin and /docs: scripts,
styles, images and media from this origin only, and markup that needs nothing more: no inline
script, style, style attribute or event handler (each would be refused by the browser). The
browser itself reports no violation in tests/test_page_browser.py."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.admin_support import JOBS, WORKERS, running_job, succeeded_job

pytestmark = pytest.mark.django_db

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


class InlineCode(HTMLParser):
    """What a page would run or apply inline: <script> without src, <style>, style="…", on…="…"."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f'<{tag} {name}="…">' for name in names if name == "style" or name.startswith("on")]


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def policy_of(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


def assert_strict_page(response) -> None:
    assert response.status_code == 200
    assert policy_of(response) == POLICY
    assert inline_code(response.content.decode()) == []


def test_the_job_page_its_form_and_its_live_panel_run_under_the_policy(client, settings):
    running = running_job(settings)
    done = succeeded_job(settings)
    for url in ("/", "/jobs/recent", f"/jobs/{running.request_id}", f"/jobs/{running.request_id}/panel",
                f"/jobs/{done.request_id}"):
        assert_strict_page(client.get(url))
    html = client.get("/").content.decode()
    # htmx is told not to add its indicator <style> (refused by style-src 'self').
    assert """<meta name="htmx-config" content='{"includeIndicatorStyles": false}'>""" in html


def test_the_login_pages_run_under_the_policy(client):
    assert_strict_page(client.get("/accounts/login/"))
    assert_strict_page(client.get("/admin/login/"))


def test_the_admins_live_pages_keep_their_script_and_styles_in_static_files(admin_client, settings):
    running = running_job(settings)
    done = succeeded_job(settings)
    for url in (JOBS, f"{JOBS}{running.pk}/change/", f"{JOBS}{done.pk}/change/", WORKERS):
        response = admin_client.get(url)
        assert_strict_page(response)
        html = response.content.decode()
        assert '<script src="/static/videojobs/admin.js"></script>' in html
        assert 'href="/static/videojobs/admin.css"' in html
    live = admin_client.get(f"{JOBS}{running.pk}/change/").content.decode()
    assert 'id="auto-refresh" data-refresh-seconds="3"' in live
    # The confirmation before deleting a video is the static script's, from a data attribute.
    assert 'data-confirm="Delete this video? Its download will answer 410."' in admin_client.get(
        f"{JOBS}{done.pk}/change/").content.decode()


def test_the_api_docs_run_under_the_policy_with_their_start_script_apart(client):
    assert_strict_page(client.get("/docs"))
    html = client.get("/docs").content.decode()
    assert '<script src="/docs?script="></script>' in html
    script = client.get("/docs?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode()
