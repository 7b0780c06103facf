"""`make run`'s supervisor: web + qcluster + daemon answer, stop on Ctrl-C, and jobs persist."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.daemon_support import ROOT, service_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, payload: dict | None = None) -> tuple[int, dict | str]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    except OSError:
        return 0, ""
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def chunked_post(port: int, body: bytes) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)]
    connection.request("POST", "/video/submit", body=iter(pieces), encode_chunked=True,
                       headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    return response.status, response.read()


def start(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_service"], cwd=ROOT, env=env,
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


def test_service_answers_every_endpoint_stops_on_ctrl_c_and_keeps_jobs_across_restart(settings, tiny_ckpt, tmp_path):  # noqa: F811
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(tiny_ckpt, SERVER_HOST="127.0.0.1", SERVER_PORT=port, WEB_WORKERS=1, Q_WORKERS=1,
                      STATIC_ROOT=tmp_path / "static", VAR_DIR=tmp_path / "var")
    log = tmp_path / "service.log"
    service = start(env, log)
    try:
        wait_for(lambda: call(base, "/health")[0] == 200, timeout=120, interval=0.5, what="/health 200", log=log)
        assert call(base, "/docs")[0] == 200
        assert call(base, "/docs/schema")[0] == 200
        # Chunked bodies through gunicorn: over the cap a 413, under it read like any other.
        assert chunked_post(port, b'{"prompt": "' + b"x" * 70_000 + b'"}')[0] == 413
        status, _ = chunked_post(port, json.dumps({"prompt": "a chunked submission of a lighthouse",
                                                   "image_url": "https://example.invalid/x.png"}).encode())
        assert status == 202
        status, body = call(base, "/video/submit", {"prompt": "too short", "image_url": "https://example.com/a.png"})
        assert status == 400 and "prompt" in body["message"]
        # An unreachable image: the job is admitted, then fails in prepare_input with a reason.
        status, body = call(base, "/video/submit", {"prompt": "a lighthouse in a storm at night",
                                                     "image_url": "http://127.0.0.1:9/none.png"})
        assert status == 202
        failing = body["requestId"]
        wait_for(lambda: call(base, "/video/status", {"requestId": failing})[1].get("status") == "Failed",
                 timeout=60, interval=0.5, what="prepare_input to fail the job", log=log)
        # A queued job (its input never arrives in time) is cancelled through the API.
        status, body = call(base, "/video/submit", {"prompt": "a lighthouse in a storm at night",
                                                     "image_url": "https://example.invalid/x.png"})
        assert status == 202
        cancelled = body["requestId"]
        assert call(base, "/video/cancel", {"requestId": cancelled}) == (
            200, {"status": "Cancelled", "requestId": cancelled, "job_status": "Cancelled", "message": "cancelled"}
        )
        children = psutil.Process(service.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "gunicorn" in names and "qcluster" in names and "run_inference_daemon" in names
    finally:
        code = stop(service)
    assert code == 0, log.read_text()[-3000:]
    # Every child is gone with the supervisor.
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert call(base, "/health")[0] == 0
    # The jobs survive a restart of every process.
    service = start(env, log)
    try:
        wait_for(lambda: call(base, "/health")[0] == 200, timeout=120, interval=0.5, what="/health after restart", log=log)
        assert call(base, "/video/status", {"requestId": failing})[1]["status"] == "Failed"
        assert call(base, "/video/status", {"requestId": cancelled})[1]["status"] == "Cancelled"
    finally:
        assert stop(service) == 0
