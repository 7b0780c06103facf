"""The API under load: requests per second and p50/p99 latency of /video/status and /video/submit
(and /health), next to a bare Django JSON view on the same server, in one run.

1. A private database on the configured Postgres (the embedded one when DATABASE_URL is unset):
   created, migrated, dropped at the end; the service's own data is not touched.
2. gunicorn exactly as `make run` starts it (``config.service.web_command``: sync workers, the
   access log on), with ``bench.api_settings``: the service plus /bench/bare, a plain Django view
   returning JSON through the same middleware, no DRF and no query. That view is the ceiling.
3. This process is the load tool (a second process beside gunicorn's): CLIENTS threads, each one
   request at a time, for SECONDS per endpoint after a warm-up; every answer is checked.
   Status reads one job; submit creates a new job each time (limits raised so none is refused);
   once a second the submitted jobs are ended, as workers would take them (QueueDrain).
   Rows marked "key" send `Authorization: Bearer`, as production does (API_KEYS_REQUIRED).

Usage: .venv/bin/python bench/api_load.py [--seconds 10] [--clients 16] [--workers 2] [--json FILE]
Client and server share the machine's cores: compare rows of one run, not runs of other machines.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from config import embedded_db  # noqa: E402
from config.service import web_command  # noqa: E402

# DATABASE_URL unset: the settings only name the embedded Postgres; the bench's databases live on it.
embedded_db.start_if_configured()


@dataclass
class Scenario:
    name: str
    method: str
    path: str
    expect: int
    body: object = None  # a dict, or a callable (thread, n) -> dict for bodies that must differ
    key: bool = False


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    unexpected: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the server -------------------------------------------------------------------------


def create_database() -> tuple[str, str]:
    """A fresh database beside the configured one: (its URL, its name)."""
    import psycopg

    name = f"videojobs_bench_{os.getpid()}"
    with psycopg.connect(_libpq(settings.DATABASE_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(settings.DATABASE_URL)._replace(path="/" + name).geturl(), name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(settings.DATABASE_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    # psycopg reads postgresql:// URLs itself; dj-database-url's host-in-query form works as is.
    return url.replace("postgres://", "postgresql://", 1)


def server_env(database_url: str, scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "bench.api_settings",
        "MEDIA_ROOT": str(scratch / "media"), "OUTPUT_DIR": str(scratch / "videos"),
        "STATIC_ROOT": str(scratch / "static"), "API_KEYS_REQUIRED": "false",
        # Every submit must be admitted: the bench measures the admission, not the refusal.
        "MAX_CONCURRENT_TASKS": str(10**7), "OWNER_MAX_UNFINISHED": str(10**7), "OWNER_SUBMITS_PER_MINUTE": str(10**7),
    })
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def wait_until_serving(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        try:
            status, _ = request(port, "GET", "/bench/bare", None, None)
            if status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not answer in time")


# --- the load tool ----------------------------------------------------------------------


def request(port: int, method: str, path: str, body: dict | None, key: str | None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def hammer(port: int, scenario: Scenario, key: str, clients: int, seconds: float, warmup: float) -> tuple[Outcome, float]:
    outcome, lock = Outcome(), threading.Lock()
    start = time.monotonic() + warmup
    end = start + seconds

    def client(index: int) -> None:
        sent = 0
        while (now := time.monotonic()) < end:
            body = scenario.body(index, sent) if callable(scenario.body) else scenario.body
            sent += 1
            began = time.perf_counter()
            try:
                status, _ = request(port, scenario.method, scenario.path, body, key if scenario.key else None)
            except OSError as exc:
                status = type(exc).__name__
            took = time.perf_counter() - began
            if now < start:
                continue  # warm-up: connections, worker caches
            with lock:
                if status == scenario.expect:
                    outcome.latencies.append(took)
                else:
                    outcome.unexpected[str(status)] = outcome.unexpected.get(str(status), 0) + 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome, seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def scenarios(request_id: str, keyed_request_id: str) -> list[Scenario]:
    def submit_body(thread: int, n: int) -> dict:
        return {"prompt": f"client {thread} submit {n}: a lighthouse in a storm at night",
                "image_url": "https://example.invalid/input.png"}

    return [
        Scenario("bare Django JSON view", "GET", "/bench/bare", 200),
        Scenario("/health", "GET", "/health", 503),  # no daemon here: unhealthy, but fully computed
        Scenario("/video/status", "POST", "/video/status", 200, {"requestId": request_id}),
        Scenario("/video/status (key)", "POST", "/video/status", 200, {"requestId": keyed_request_id}, key=True),
        Scenario("/video/submit", "POST", "/video/submit", 202, submit_body),
        Scenario("/video/submit (key)", "POST", "/video/submit", 202, submit_body, key=True),
    ]


class QueueDrain:
    """Workers take jobs off the queue in a real service; here nothing would, and the unfinished
    rows every submit counts would grow without bound. Once a second this ends the jobs the bench
    submitted (all but the ones the status rows read), keeping the queue as short as it runs."""

    def __init__(self, database_url: str, keep: list[str]) -> None:
        self.database_url, self.keep = database_url, keep
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(_libpq(self.database_url), autocommit=True) as conn:
            while not self.stop.wait(1.0):
                conn.execute("UPDATE videojobs_videojob SET status = 'Cancelled', finished_at = now()"
                             " WHERE status = 'InQueue' AND NOT request_id = ANY(%s)", [self.keep])

    def __enter__(self) -> "QueueDrain":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def report(rows: list[dict], args: argparse.Namespace) -> None:
    bare = rows[0]["requests_per_second"]
    print(f"\nAPI under load: {args.clients} clients, {args.seconds:.0f} s per row, gunicorn {args.workers} sync workers,"
          f" {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), client and server on one machine\n")
    print(f"{'endpoint':<26}{'req/s':>8}{'vs bare':>9}{'p50 ms':>9}{'p99 ms':>9}{'ok':>8}  unexpected")
    for row in rows:
        print(f"{row['endpoint']:<26}{row['requests_per_second']:>8.1f}{row['requests_per_second'] / bare:>8.0%} "
              f"{row['p50_ms']:>8.1f}{row['p99_ms']:>9.1f}{row['ok']:>8}  {row['unexpected'] or '-'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=settings.WEB_WORKERS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    database_url, name = create_database()
    with tempfile.TemporaryDirectory(prefix="api-load-") as scratch:
        env = server_env(database_url, Path(scratch))
        server = None
        try:
            manage(env, "migrate", "--noinput")
            key = manage(env, "create_api_key", "api-load bench").strip()
            port = free_port()
            with open(Path(scratch) / "gunicorn.log", "wb") as log:
                server = subprocess.Popen(web_command(host="127.0.0.1", port=port, workers=args.workers),
                                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
                wait_until_serving(port, server)
                ids = [json.loads(request(port, "POST", "/video/submit", {
                    "prompt": "the job every status request reads", "image_url": "https://example.invalid/a.png"},
                    who)[1])["requestId"] for who in (None, key)]
                rows = []
                with QueueDrain(database_url, keep=ids):
                    for scenario in scenarios(*ids):
                        outcome, seconds = hammer(port, scenario, key, args.clients, args.seconds, args.warmup)
                        rows.append({
                            "endpoint": scenario.name, "requests_per_second": len(outcome.latencies) / seconds,
                            "p50_ms": percentile(outcome.latencies, 0.5) * 1000,
                            "p99_ms": percentile(outcome.latencies, 0.99) * 1000,
                            "ok": len(outcome.latencies), "unexpected": outcome.unexpected,
                        })
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            drop_database(name)
    report(rows, args)
    if args.json:
        args.json.write_text(json.dumps({"clients": args.clients, "seconds": args.seconds, "workers": args.workers,
                                         "cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
