"""claim_next_job under contention: 8 threads x 50 jobs, every job claimed exactly once."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from videojobs import services
from videojobs.models import JobStatus, VideoJob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WORKERS = 8
JOBS_PER_WORKER = 50


def test_every_job_is_claimed_exactly_once_by_eight_concurrent_workers(settings):
    # One owner submits all 400: lift the per-owner gates with the queue's.
    settings.MAX_CONCURRENT_TASKS = settings.OWNER_MAX_UNFINISHED = WORKERS * JOBS_PER_WORKER
    settings.OWNER_SUBMITS_PER_MINUTE = WORKERS * JOBS_PER_WORKER
    jobs = [
        services.submit_job(prompt="a prompt long enough", image_url="https://example.com/a.png", params={})[0]
        for _ in range(WORKERS * JOBS_PER_WORKER)
    ]
    for job in jobs:
        services.mark_input_ready(job_id=job.pk, image_path="x.png", sha256="0" * 64)

    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(WORKERS)

    def worker(name: str) -> None:
        start.wait()
        try:
            while True:
                job = services.claim_next_job(worker=name, lease_seconds=300)
                if job is None:
                    return
                with lock:
                    claimed.append((name, job.pk))
                services.complete_job(job_id=job.pk, attempt=job.attempt, result={}, timings={})
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    counts = Counter(pk for _, pk in claimed)
    assert len(counts) == len(jobs)
    assert set(counts.values()) == {1}
    assert VideoJob.objects.filter(status=JobStatus.SUCCEED, attempt=1).count() == len(jobs)
    # More than one worker really took part (the race was real).
    assert len({name for name, _ in claimed}) > 1
