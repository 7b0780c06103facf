"""1,000 submits from 50 concurrent clients with keys, through gunicorn: none lost, none doubled,
per-owner limits held (issue 8, item 1)."""
from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter

import pytest
from rest_framework_api_key.models import APIKey

from tests.daemon_support import running, service_env, wait_for
from tests.test_run_service import free_port
from videojobs.models import VideoJob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CLIENTS, SUBMITS, RETRIES, OWNER_LIMIT = 50, 20, 5, 15


def _post(url: str, key: str, body: dict, idempotency: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}", "Idempotency-Key": idempotency})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_thousand_concurrent_submits_with_keys(tiny_ckpt, tmp_path):
    port = free_port()
    env = service_env(tiny_ckpt, MAX_CONCURRENT_TASKS=10_000, OWNER_MAX_UNFINISHED=OWNER_LIMIT,
                      OWNER_SUBMITS_PER_MINUTE=1000, API_KEYS_REQUIRED="true")
    keys = [APIKey.objects.create_key(name=f"client-{i}")[1] for i in range(CLIENTS)]
    argv = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "4"]
    log = tmp_path / "gunicorn.log"
    results: list[tuple[int, int, str, int, dict]] = []  # (client, submit, key, status, body)
    lock = threading.Lock()

    def client(index: int) -> None:
        body = {"prompt": f"client {index} asks for a lighthouse in a storm", "image_url": "https://example.invalid/x.png"}
        # Every submit, then a retry of the first RETRIES with the same key and body.
        for number in [*range(SUBMITS), *range(RETRIES)]:
            status, answer = _post(f"http://127.0.0.1:{port}/video/submit", keys[index], body, f"order-{number}")
            with lock:
                results.append((index, number, keys[index], status, answer))

    with running(argv, env, log):
        wait_for(lambda: _health(port), timeout=60, interval=0.2, what="gunicorn", log=log)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert len(results) == CLIENTS * (SUBMITS + RETRIES)
    statuses = Counter(status for *_, status, _ in results)
    assert set(statuses) <= {202, 429}, statuses
    # Every 202 names a row of its own client; a retry names the row of its first submit.
    accepted = {(client_, number): answer["requestId"] for client_, number, _, status, answer in results if status == 202}
    rows = dict(VideoJob.objects.values_list("request_id", "owner"))
    assert set(accepted.values()) == set(rows)
    assert len(rows) == CLIENTS * OWNER_LIMIT
    assert Counter(rows.values()) == {owner: OWNER_LIMIT for owner in set(rows.values())}
    for client_, number, key, status, answer in results:
        if status == 202:
            assert rows[answer["requestId"]] == f"key:{key.split('.')[0]}"
        else:
            assert answer["error"] == "OWNER_LIMIT"


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
