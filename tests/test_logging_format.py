"""LOG_FORMAT: JSON lines that parse and carry a job event's context, plain lines that show the
request_id and worker, and /health's 503 while the daemon loads kept out of the error log."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from unittest.mock import ANY

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.log import log_response

from tests.daemon_support import ROOT, database_url_for_tests, wait_for
from tests.test_deploy_units import env_template, expand, service

# Settings need no database here: a URL never connected to keeps the embedded one asleep.
NO_DB = "postgres://nobody@127.0.0.1:1/none"
EVENT = {"event": "started", "request_id": "3f0c9a", "worker": "gpu-a:4242", "status": "InProgress"}
EMIT = f"""
import logging, django
django.setup()
logging.getLogger("videojobs.events").info("job %s", "started", extra={EVENT!r})
logging.getLogger("inference.daemon").info("idle, waiting for jobs")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("videojobs.tasks").exception("prepare failed", extra={{"request_id": "3f0c9a", "attempt": 2}})
"""


def emit(**environ: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": NO_DB, **environ}
    return subprocess.run([sys.executable, "-c", EMIT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_json_format_writes_one_object_per_line_with_the_job_event_context():
    result = emit(LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    event, idle, failure = [json.loads(line) for line in result.stderr.splitlines()]
    assert event == {"time": event["time"], "level": "INFO", "logger": "videojobs.events", "message": "job started", **EVENT}
    stamp = datetime.fromisoformat(event["time"])
    assert stamp.utcoffset() == timedelta(0) and abs(datetime.now(stamp.tzinfo) - stamp) < timedelta(minutes=1)
    assert idle.keys() == {"time", "level", "logger", "message"}
    assert failure["level"] == "ERROR" and failure["request_id"] == "3f0c9a" and failure["attempt"] == 2
    assert failure["exc_info"].startswith("Traceback") and "ZeroDivisionError" in failure["exc_info"]


def test_plain_format_shows_request_id_and_worker_after_the_message():
    result = emit(LOG_FORMAT="plain")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].endswith("INFO videojobs.events job started [request_id=3f0c9a worker=gpu-a:4242]")
    assert lines[1].endswith("INFO inference.daemon idle, waiting for jobs")
    assert lines[2].endswith("ERROR videojobs.tasks prepare failed [request_id=3f0c9a]")
    assert lines[3] == "Traceback (most recent call last):" and lines[-1].startswith("ZeroDivisionError")


def test_plain_is_the_default_format():
    environ = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    result = subprocess.run([sys.executable, "-c", EMIT], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": NO_DB})
    assert "job started [request_id=3f0c9a worker=gpu-a:4242]" in result.stderr.splitlines()[0]


def test_unknown_log_format_stops_the_process_naming_the_variable():
    result = emit(LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "ImproperlyConfigured: LOG_FORMAT must be one of plain, json, got 'xml'" in result.stderr


# --- Django's error log -----------------------------------------------------------------

def request_errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django.request" and r.levelno >= logging.ERROR]


@pytest.mark.django_db
def test_health_503_while_no_worker_is_ready_is_not_logged_as_an_error(api, caplog):
    with caplog.at_level(logging.INFO):
        response = api.get("/health")
    assert response.status_code == 503
    assert request_errors(caplog) == []


@pytest.mark.parametrize(("path", "status"), [("/video/status", 503), ("/health", 500), ("/metrics", 503)])
def test_other_server_errors_are_still_logged_as_errors(caplog, path, status):
    # Exactly what Django's handlers call for every response of 500 and above.
    with caplog.at_level(logging.INFO):
        log_response("%s: %s", "Server error", path, response=HttpResponse(status=status), request=RequestFactory().get(path))
    assert [r.getMessage() for r in request_errors(caplog)] == [f"Server error: {path}"]


# --- gunicorn as the web unit starts it -------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gunicorn_writes_only_json_lines_and_no_error_for_a_health_probe(tmp_path):
    port = free_port()
    environ = {**os.environ, "DATABASE_URL": database_url_for_tests(), "LOG_FORMAT": "json", "SERVER_HOST": "127.0.0.1",
               "SERVER_PORT": str(port), "WEB_WORKERS": "1", "PYTHONUNBUFFERED": "1"}
    (command,) = service("videogen-web.service")["ExecStart"]
    argv = expand(command, {**env_template(), **environ})
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: get_status(f"http://127.0.0.1:{port}/health"), timeout=60, what="gunicorn", log=log)
            assert get_status(f"http://127.0.0.1:{port}/health") == 503
            assert get_status(f"http://127.0.0.1:{port}/no-such-page") == 404
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {"gunicorn.error", "gunicorn.access"} <= {r["logger"] for r in records}
    assert any(r["logger"] == "gunicorn.access" and '"GET /health HTTP/1.1" 503' in r["message"] for r in records)
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")], records
    # Django's request log still reaches the console, with the response's status code.
    assert [r for r in records if r["logger"] == "django.request"] == [
        {"time": ANY, "level": "WARNING", "logger": "django.request", "message": "Not Found: /no-such-page", "status_code": 404}
    ]
