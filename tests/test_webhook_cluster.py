"""Webhook deliveries run on a django-q2 cluster of their own, beside the one that prepares
inputs: a client's receiver that hangs holds only delivery workers, never another client's job."""
from __future__ import annotations

import http.server
import os
import socket
import threading
import time

import pytest
from django.db import transaction
from django_q.models import OrmQ

from config.service import child_commands
from tests.conftest import make_job, png_bytes
from tests.daemon_support import database_url_for_tests, job_state, wait_for
from tests.test_run_service import start, stop
from videojobs import services
from videojobs.models import DeliveryState, WebhookDelivery
from videojobs.services import handoff

SECRET = "cluster-webhook-secret-0123456789abcdef0123"


def queued() -> dict[str, str]:
    """The django-q2 queue: each waiting task's function, and the cluster that will run it."""
    return {row.func(): row.key for row in OrmQ.objects.all()}


@pytest.mark.django_db
def test_deliveries_are_queued_for_the_webhook_cluster_and_inputs_for_the_default_one(settings):
    handoff.enqueue_webhook(123)
    handoff.enqueue_prepare_input(456)
    queues = queued()
    assert queues["videojobs.tasks.deliver_webhook"] != queues["videojobs.tasks.prepare_input"]
    assert queues == {"videojobs.tasks.deliver_webhook": settings.WEBHOOK_CLUSTER,
                      "videojobs.tasks.prepare_input": settings.Q_CLUSTER["name"]}
    assert settings.WEBHOOK_CLUSTER != settings.Q_CLUSTER["name"]
    assert settings.WEBHOOK_CLUSTER in settings.Q_CLUSTER["ALT_CLUSTERS"]


def test_the_supervisor_starts_a_cluster_for_each_queue(settings):
    settings.SERVICE_ROLES = ["qcluster"]
    inputs, deliveries = child_commands()
    assert inputs.argv[-1] == deliveries.argv[-1] == "qcluster"
    # django-q2 takes a cluster's name from Q_CLUSTER_NAME (unset: the default cluster).
    assert "Q_CLUSTER_NAME" not in inputs.env
    assert deliveries.env == {"Q_CLUSTER_NAME": settings.WEBHOOK_CLUSTER}


# --- the real clusters, as `make run` starts them -------------------------------------------

class HangingReceiver:
    """A webhook receiver that takes every connection and never answers (until closed)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)

    def __enter__(self) -> "HangingReceiver":
        self.thread.start()
        return self

    def close(self) -> None:
        """Hang up on every delivery (each fails at once) and take no more."""
        self.listener.close()
        for connection in self.held:
            connection.close()

    def __exit__(self, *exc) -> None:
        self.close()


class ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        image = png_bytes(80, 60)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(image)))
                self.end_headers()
                self.wfile.write(image)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/input.png"
        threading.Thread(target=self.serve_forever, daemon=True).start()


HOOK_TIMEOUT = 20  # the service's WEBHOOK_TIMEOUT: how long a hanging receiver holds a worker


def cluster_env(tmp_path, settings) -> dict[str, str]:
    """The supervisor on this host's qcluster role only, against the test database."""
    return {
        **os.environ, "DATABASE_URL": database_url_for_tests(), "SERVICE_ROLES": "qcluster",
        "VAR_DIR": str(tmp_path / "var"), "MEDIA_ROOT": str(settings.MEDIA_ROOT), "Q_WORKERS": "2",
        "WEBHOOK_WORKERS": "2", "WEBHOOK_TIMEOUT": str(HOOK_TIMEOUT), "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "IMAGE_URL_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
    }


def input_ready(image_url: str, owner: str, log) -> float:
    """Seconds from a submit to its input being ready (prepared by a live cluster)."""
    started = time.monotonic()
    job = make_job(image_url=image_url, owner=owner)
    wait_for(lambda: job_state(job.pk).input_ready_at, timeout=HOOK_TIMEOUT / 2, interval=0.1,
             what=f"{owner}'s input to be ready", log=log)
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_hanging_webhook_receiver_does_not_delay_another_clients_input(settings, tmp_path):
    settings.WEBHOOK_SECRET, settings.WEBHOOK_ALLOWED_NETWORKS = SECRET, ["127.0.0.0/8"]
    log = tmp_path / "service.log"
    images = ImageServer()
    with HangingReceiver() as receiver:
        service = start(cluster_env(tmp_path, settings), log)
        try:
            # The cluster that prepares inputs is up: a first input is prepared.
            first = make_job(image_url=images.url, owner="warm-up")
            wait_for(lambda: job_state(first.pk).input_ready_at, timeout=120, interval=0.5, what="a first input", log=log)
            # One client's jobs end; their webhooks go to a receiver that never answers, more
            # deliveries than either cluster has workers.
            for _ in range(4):
                job = make_job(image_url=images.url, owner="tenant-a", webhook_url=receiver.url)
                with transaction.atomic():
                    services.request_cancel(request_id=job.request_id)
            wait_for(lambda: len(receiver.held) >= 2, timeout=120, interval=0.2, what="deliveries to hang", log=log)
            # Another client's input is prepared meanwhile, well before any delivery times out.
            seconds = input_ready(images.url, "tenant-b", log)
            hanging = WebhookDelivery.objects.filter(job__owner="tenant-a")
            assert seconds < HOOK_TIMEOUT / 2
            assert [(d.state, d.attempts) for d in hanging] == [(DeliveryState.PENDING, 0)] * 4
        finally:
            receiver.close()  # the hanging deliveries fail at once: the clusters stop quickly
            code = stop(service)
            images.shutdown()
            images.server_close()
    assert code == 0, log.read_text()[-3000:]
