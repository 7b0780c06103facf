"""The whole service (`make run`'s supervisor: gunicorn, qcluster, the daemon on the tiny model)
sends a job's webhooks to a local receiver, signed with WEBHOOK_SECRET."""
from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from tests.conftest import png_bytes
from tests.daemon_support import service_env, wait_for
from tests.test_run_service import call, free_port, start, stop
from tests.webhook_receiver import Receiver
from videojobs.net import webhooks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SECRET = "e2e-webhook-secret-" + "0123456789abcdef" * 2


def multipart_submit(base: str, fields: dict[str, str], image: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="in.png"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(base + "/video/submit", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def test_job_events_reach_a_local_receiver_signed(tiny_ckpt, tmp_path):  # noqa: F811
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(tiny_ckpt, SERVER_HOST="127.0.0.1", SERVER_PORT=port, WEB_WORKERS=1, Q_WORKERS=1,
                      STATIC_ROOT=tmp_path / "static", VAR_DIR=tmp_path / "var", WEBHOOK_SECRET=SECRET,
                      WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8")
    log = tmp_path / "service.log"
    with Receiver() as receiver:
        service = start(env, log)
        try:
            wait_for(lambda: call(base, "/health")[0] == 200, timeout=120, interval=0.5, what="/health 200", log=log)
            status, body = multipart_submit(base, {
                "prompt": "a red square drifting to the left", "image_size": "64*64", "num_frames": "25",
                "infer_steps": "20", "webhook_url": receiver.url, "webhook_events": "started,progress,completed",
            }, png_bytes(64, 64))
            assert status == 202
            request_id = body["requestId"]
            # started, a progress event per tenth of the 20 steps, completed: each its own delivery.
            wait_for(lambda: len(receiver.requests) >= 12, timeout=240, interval=0.5, what="12 webhooks", log=log)
        finally:
            assert stop(service) == 0, log.read_text()[-3000:]
    for request in receiver.requests:
        headers = request["headers"]
        assert webhooks.verify(secret=SECRET, timestamp=headers["X-Webhook-Timestamp"], body=request["body"],
                               signature=headers["X-Signature"])
        assert json.loads(request["body"])["requestId"] == request_id
    events = [r["headers"]["X-Webhook-Event"] for r in receiver.requests]
    assert sorted(events) == sorted(["started", "completed"] + ["progress"] * 10)
    final = json.loads(next(r["body"] for r in receiver.requests if r["headers"]["X-Webhook-Event"] == "completed"))
    assert final["status"] == "Succeed" and final["results"]["video_url"] == f"/videos/{request_id}.mp4"
