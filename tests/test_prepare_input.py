"""prepare_input (the django-q2 task and its service) against a local HTTP server."""
from __future__ import annotations

import hashlib
import http.server
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_job, png_bytes
from videojobs import services, tasks
from videojobs.models import JobPhase, JobStatus, VideoJob

pytestmark = pytest.mark.django_db

HOST = "127.0.0.2"  # allowed by the test policy; 127.0.0.1 is not


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server(settings):
    routes: dict = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.IMAGE_URL_ALLOWED_NETWORKS = [f"{HOST}/32"]
    settings.IMAGE_TOTAL_TIMEOUT = 1.5
    settings.IMAGE_CONNECT_TIMEOUT = 1.0
    base = f"http://{HOST}:{server.server_address[1]}"
    yield base, routes
    server.shutdown()
    server.server_close()


def body(data: bytes, content_type: str = "image/png", status: int = 200):
    def respond(h):
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return respond


def prepare(url: str) -> VideoJob:
    job = make_job(image_url=url)
    tasks.prepare_input(job.pk)
    return VideoJob.objects.get(pk=job.pk)


def test_good_image_is_stored_normalised_and_the_job_becomes_claimable(image_server, settings):
    base, routes = image_server
    routes["/cat.png"] = body(png_bytes(80, 60))
    job = prepare(f"{base}/cat.png")
    assert job.status == JobStatus.IN_QUEUE
    assert job.input_ready_at is not None and job.phase == JobPhase.WAITING
    stored = Path(settings.MEDIA_ROOT) / job.input_image
    assert stored.is_file()
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == job.input_sha256


def test_http_error_fails_the_job_with_the_status_code(image_server):
    base, _ = image_server
    job = prepare(f"{base}/missing.png")
    assert job.status == JobStatus.FAILED
    assert job.reason == "image_url returned HTTP 404"


def test_not_an_image_fails_the_job(image_server):
    base, routes = image_server
    routes["/page"] = body(b"<html>hello</html>", "text/html")
    job = prepare(f"{base}/page")
    assert job.status == JobStatus.FAILED
    assert job.reason == "image_url is not an image"


def test_too_large_fails_the_job(image_server, settings):
    base, routes = image_server
    settings.IMAGE_MAX_BYTES = 2048
    routes["/big.png"] = body(b"\x89PNG" + b"0" * 5000)
    job = prepare(f"{base}/big.png")
    assert job.status == JobStatus.FAILED
    assert "larger than" in job.reason


def test_too_slow_fails_the_job_within_the_total_timeout(image_server):
    base, routes = image_server

    def slow(h):
        time.sleep(3)
        body(png_bytes())(h)

    routes["/slow.png"] = slow
    started = time.monotonic()
    job = prepare(f"{base}/slow.png")
    assert time.monotonic() - started < 3
    assert job.status == JobStatus.FAILED
    assert "timed out" in job.reason


def test_redirect_to_loopback_is_refused(image_server):
    base, routes = image_server

    def redirect(h):
        h.send_response(302)
        h.send_header("Location", "http://127.0.0.1:9/secret.png")
        h.end_headers()

    routes["/r"] = redirect
    job = prepare(f"{base}/r")
    assert job.status == JobStatus.FAILED
    assert job.error_code == "IMAGE_URL_FORBIDDEN"
    assert "non-public" in job.reason


def test_hostname_resolving_to_a_private_address_is_refused(monkeypatch):
    import socket

    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port or 80))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    job = prepare("http://internal.example.com/a.png")
    assert job.status == JobStatus.FAILED
    assert "10.0.0.1" in job.reason


def test_cancelled_job_is_not_made_ready(image_server, settings):
    base, routes = image_server
    routes["/cat.png"] = body(png_bytes())
    job = make_job(image_url=f"{base}/cat.png")
    from videojobs import services

    services.request_cancel(request_id=job.request_id)
    assert tasks.prepare_input(job.pk) == "skipped"
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert not list(Path(settings.MEDIA_ROOT).glob("inputs/*"))


# --- an upload: stored as sent by the submit, decoded here ------------------------------------


def upload_job(settings, data: bytes) -> tuple[VideoJob, Path]:
    job = make_job(image_url="", image_bytes=data)
    return job, Path(settings.MEDIA_ROOT) / "inputs" / f"{job.request_id}.upload"


def test_an_upload_is_decoded_stored_as_png_and_its_file_as_sent_deleted(settings):
    job, stored = upload_job(settings, png_bytes(80, 60))
    assert stored.is_file() and job.input_ready_at is None
    tasks.prepare_input(job.pk)
    job.refresh_from_db()
    assert (job.status, job.phase) == (JobStatus.IN_QUEUE, JobPhase.WAITING)
    assert hashlib.sha256((Path(settings.MEDIA_ROOT) / job.input_image).read_bytes()).hexdigest() == job.input_sha256
    assert not stored.exists()


def test_a_cancelled_upload_is_not_prepared_and_its_file_is_deleted(settings):
    job, stored = upload_job(settings, png_bytes())
    services.request_cancel(request_id=job.request_id)
    assert tasks.prepare_input(job.pk) == "skipped"
    assert VideoJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert not list(Path(settings.MEDIA_ROOT).glob("inputs/*"))


def test_an_upload_no_longer_stored_fails_the_job_as_input_missing(settings):
    job, stored = upload_job(settings, png_bytes())
    stored.unlink()
    tasks.prepare_input(job.pk)
    job.refresh_from_db()
    assert (job.status, job.error_code) == (JobStatus.FAILED, "INPUT_MISSING")
    assert job.reason == "the uploaded image is no longer stored on the server; submit the job again"
