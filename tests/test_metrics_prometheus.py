"""GET /metrics in the Prometheus format: exact values from Postgres, parsed as Prometheus would."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_job, make_ready_job
from videojobs import services
from videojobs.models import InferenceWorker, VideoJob, WebhookDelivery

pytestmark = pytest.mark.django_db

# What a Prometheus 3 server sends.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                     "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;q=0.4,"
                     "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
# One query per aggregate, whatever the number of jobs, workers or deliveries.
SCRAPE_QUERIES = 17  # one reads MetricTotal, one the pending webhook deliveries, one the jobs by sampler, one by LoRA
SMALL, WIDE = {"image_size": "832*480", "num_frames": 25, "infer_steps": 20}, {"image_size": "1280*720",
                                                                                 "num_frames": 81, "infer_steps": 40}


@pytest.fixture(autouse=True)
def _gates(settings):
    settings.MAX_CONCURRENT_TASKS = 10
    settings.OWNER_MAX_UNFINISHED = settings.OWNER_SUBMITS_PER_MINUTE = 1000


def scrape(client, path="/metrics?format=prometheus", **headers):
    response = client.get(path, **headers)
    assert response.status_code == 200, response.content
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def value(families, family: str, sample: str | None = None, **labels) -> float:
    found = [s.value for s in families[family].samples if s.name == (sample or family) and s.labels == labels]
    assert len(found) == 1, (family, labels, families[family].samples)
    return found[0]


def histogram(families, family: str, **labels) -> tuple[dict[str, float], float, float]:
    """(cumulative count per le, _count, _sum) of one series."""
    samples = families[family].samples
    buckets = {s.labels["le"]: s.value for s in samples
               if s.name == f"{family}_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels}
    assert buckets, (family, labels, samples)
    return buckets, value(families, family, f"{family}_count", **labels), value(families, family, f"{family}_sum", **labels)


def ran(*, params: dict, end: str, wait: float, duration: float, timings: dict | None = None) -> VideoJob:
    """A job that a worker claimed and ended as ``end``, submitted ``wait`` s before its start and
    ended ``duration`` s after it."""
    job = make_ready_job(params=params)
    claimed = services.claim_next_job(worker="w")
    assert claimed.pk == job.pk
    ids = {"job_id": job.pk, "attempt": claimed.attempt}
    if end == "Succeed":
        assert services.complete_job(**ids, result={}, timings=timings or {})
    elif end == "Failed":
        assert services.fail_job(**ids, code="INFERENCE_ERROR", reason="RuntimeError: boom", timings=timings)
    else:
        services.request_cancel(request_id=job.request_id)
        assert services.finish_cancelled_job(**ids, timings=timings)
    finished = timezone.now() - timedelta(hours=1)
    started = finished - timedelta(seconds=duration)
    VideoJob.objects.filter(pk=job.pk).update(created_at=started - timedelta(seconds=wait), started_at=started,
                                              finished_at=finished)
    return job


def input_failure(code: str) -> VideoJob:
    job = make_job()
    assert services.fail_input(job_id=job.pk, code=code, reason="the image could not be fetched")
    return job


@pytest.fixture
def history():
    """Two succeeded, one failed and one cancelled run, three input failures, one job cancelled in
    the queue, and one job in each unfinished place (preparing, waiting, running)."""
    ran(params=SMALL, end="Succeed", wait=10, duration=50,
        timings={"encoding": 2.0, "denoising": 40.0, "decoding": 6.0, "saving": 1.5})
    ran(params={**SMALL, "num_frames": 81, "infer_steps": 40}, end="Succeed", wait=3, duration=400,
        timings={"encoding": 20.0, "denoising": 360.0, "decoding": 15.0, "saving": 4.0})
    ran(params=WIDE, end="Failed", wait=70, duration=700)
    ran(params=WIDE, end="Cancelled", wait=0.5, duration=1)
    for code in ("IMAGE_HTTP_ERROR", "IMAGE_TOO_LARGE", "IMAGE_HTTP_ERROR"):
        input_failure(code)
    services.request_cancel(request_id=make_job().request_id)
    make_job()  # preparing
    make_ready_job()
    running = services.claim_next_job(worker="w")
    make_ready_job()  # waiting
    return running


def test_jobs_by_status_and_the_queue_by_phase(api, history):
    families = scrape(api)
    assert {s.labels["status"]: s.value for s in families["videogen_jobs"].samples} == {
        "InQueue": 2, "InProgress": 1, "Succeed": 2, "Failed": 4, "Cancelled": 2}
    assert value(families, "videogen_queue_depth") == 2
    assert value(families, "videogen_queue_depth_by_phase", phase="preparing") == 1
    assert value(families, "videogen_queue_depth_by_phase", phase="waiting") == 1
    assert value(families, "videogen_queue_capacity") == 10
    assert value(families, "videogen_queue_slots_available") == 10 - 3


def test_durations_and_queue_waits_are_histograms_by_resolution_and_status(api, history):
    families = scrape(api)
    buckets, count, total = histogram(families, "videogen_job_duration_seconds", resolution="832*480", status="Succeed")
    assert (count, total) == (2, 450)
    assert buckets == {"1.0": 0, "5.0": 0, "15.0": 0, "30.0": 0, "60.0": 1, "120.0": 1, "300.0": 1, "600.0": 2,
                       "1200.0": 2, "1800.0": 2, "3600.0": 2, "+Inf": 2}
    buckets, count, total = histogram(families, "videogen_job_queue_wait_seconds", resolution="832*480", status="Succeed")
    assert (buckets["1.0"], buckets["5.0"], buckets["15.0"], count, total) == (0, 1, 2, 2, 13)
    # A bound holds the values equal to it (le).
    buckets, count, total = histogram(families, "videogen_job_duration_seconds", resolution="1280*720", status="Cancelled")
    assert (buckets["1.0"], count, total) == (1, 1, 1)
    assert histogram(families, "videogen_job_queue_wait_seconds", resolution="1280*720", status="Cancelled")[2] == 0.5
    buckets, count, total = histogram(families, "videogen_job_duration_seconds", resolution="1280*720", status="Failed")
    assert (buckets["600.0"], buckets["1200.0"], count, total) == (0, 1, 1, 700)
    # Jobs that never started (input failures, cancelled in the queue) have no wait or run time.
    assert {s.labels["resolution"] for s in families["videogen_job_duration_seconds"].samples} == {"832*480", "1280*720"}


def test_seconds_per_denoising_step_and_per_phase(api, history):
    families = scrape(api)
    buckets, count, total = histogram(families, "videogen_denoising_step_seconds", resolution="832*480")
    assert (buckets["1.0"], buckets["2.0"], buckets["5.0"], buckets["10.0"], count, total) == (0, 1, 1, 2, 2, 11)
    assert {s.labels["resolution"] for s in families["videogen_denoising_step_seconds"].samples} == {"832*480"}
    phases = {phase: histogram(families, "videogen_job_phase_seconds", phase=phase)
              for phase in ("encoding", "denoising", "decoding", "saving")}
    assert {phase: (count, total) for phase, (_, count, total) in phases.items()} == {
        "encoding": (2, 22), "denoising": (2, 400), "decoding": (2, 21), "saving": (2, 5.5)}
    assert (phases["saving"][0]["1.0"], phases["saving"][0]["5.0"]) == (0, 2)
    assert (phases["denoising"][0]["300.0"], phases["denoising"][0]["600.0"]) == (1, 2)


def test_frames_and_steps_asked_for_by_resolution(api, history):
    families = scrape(api)
    frames, count, total = histogram(families, "videogen_job_frames", resolution="832*480")
    assert (frames["17.0"], frames["33.0"], frames["65.0"], frames["81.0"], count, total) == (0, 1, 1, 2, 2, 106)
    steps, count, total = histogram(families, "videogen_job_infer_steps", resolution="832*480")
    assert (steps["10.0"], steps["20.0"], steps["30.0"], steps["40.0"], count, total) == (0, 1, 1, 2, 2, 60)
    # make_job's 64*64 jobs: the three input failures and the one cancelled in the queue.
    assert histogram(families, "videogen_job_frames", resolution="64*64")[1] == 4


def test_input_failures_are_counted_by_code(api, history):
    families = scrape(api)
    assert {s.labels["code"]: s.value for s in families["videogen_input_failures"].samples
            if s.name == "videogen_input_failures_total"} == {"IMAGE_HTTP_ERROR": 2, "IMAGE_TOO_LARGE": 1}


def _workers(settings, running: VideoJob) -> None:
    """Registered in this order: lost, stopped, idle (a default host:pid name), busy, loading, stale."""
    def register(name: str, **kwargs) -> None:
        services.register_worker(name=name, host=kwargs.get("host", "h"), pid=kwargs.get("pid", 1), world_size=2,
                                 topology={}, device="cuda:0", model="/data/models/Wan2.1-I2V-14B-720P")

    register("gone")
    services.mark_lost_workers(now=timezone.now() + timedelta(seconds=settings.WORKER_LOST_SECONDS + 1))
    register("done")
    services.update_worker(name="done", state="stopped")
    register("gpu-node-7:4242", host="gpu-node-7", pid=4242)
    for _ in range(2):
        services.update_worker(name="gpu-node-7:4242", state="idle", job_done=True)
    register("busy")
    services.update_worker(name="busy", state="busy", current_job_id=running.pk)
    register("loading")
    register("silent")
    services.update_worker(name="silent", state="idle")
    InferenceWorker.objects.filter(name="silent").update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS + 30))


def test_worker_states_and_each_workers_info(api, history, settings):
    _workers(settings, history)
    families = scrape(api)
    assert {s.labels["state"]: s.value for s in families["videogen_workers"].samples} == {
        "loading": 1, "idle": 1, "busy": 1, "stopped": 1, "lost": 1, "stale": 1}
    assert value(families, "videogen_workers_ready") == 2
    info = {s.labels["name"]: (s.labels["state"], s.labels["device"], s.labels["world_size"], s.value)
            for s in families["videogen_worker_info"].samples}
    # Stopped workers are left out; anonymous callers see numbers, not names.
    assert info == {"#1": ("lost", "cuda:0", "2", 1), "#2": ("idle", "cuda:0", "2", 1), "#3": ("busy", "cuda:0", "2", 1),
                    "#4": ("loading", "cuda:0", "2", 1), "#5": ("stale", "cuda:0", "2", 1)}
    assert value(families, "videogen_worker_jobs_done", "videogen_worker_jobs_done_total", name="#2") == 2
    age = value(families, "videogen_worker_heartbeat_age_seconds", name="#5")
    assert settings.WORKER_STALE_SECONDS + 30 <= age < settings.WORKER_STALE_SECONDS + 60
    assert value(families, "videogen_worker_heartbeat_age_seconds", name="#2") < 30


def test_anonymous_scrapes_carry_no_host_pid_or_model_path_and_operators_see_names(api, history, settings,
                                                                                   django_user_model):
    _workers(settings, history)
    text = api.get("/metrics?format=prometheus").content.decode()
    assert "gpu-node-7" not in text and "4242" not in text and "/data/models" not in text
    api.force_login(django_user_model.objects.create_user("ops", password="x", is_staff=True))
    families = scrape(api)
    assert value(families, "videogen_worker_jobs_done", "videogen_worker_jobs_done_total", name="gpu-node-7:4242") == 2
    assert "/data/models" not in api.get("/metrics?format=prometheus").content.decode()


def test_webhook_deliveries_by_event_and_state_and_the_attempts_that_failed(api):
    job = make_job()
    for event, state, attempts in [("completed", "delivered", 1), ("completed", "delivered", 3),
                                   ("completed", "failed", 5), ("started", "pending", 2), ("started", "delivered", 1)]:
        WebhookDelivery.objects.create(job=job, event=event, url="https://example.com/hook", state=state,
                                       attempts=attempts)
    families = scrape(api)
    assert {(s.labels["event"], s.labels["state"]): s.value for s in families["videogen_webhook_deliveries"].samples
            if s.name == "videogen_webhook_deliveries_total"} == {
        ("completed", "delivered"): 2, ("completed", "failed"): 1, ("started", "delivered"): 1}
    # Pending is a state deliveries leave, so a gauge: a counter must never go down.
    assert value(families, "videogen_webhook_deliveries_pending", event="started") == 1
    # Delivered: all but the last try failed (0 + 2 + 0); failed: all 5; pending: both so far.
    assert value(families, "videogen_webhook_failed_attempts", "videogen_webhook_failed_attempts_total") == 9


def test_acceleration_gauges_keep_their_names(api):
    job = make_job()
    VideoJob.objects.filter(pk=job.pk).update(status="Succeed", result={"acceleration": {
        "cache": {"method": "dbcache", "cached_steps": {"cond": 5}, "skipped_blocks": {"cond": 160, "uncond": 128}},
        "attention_backend": "native", "prompt_cache_hits": 2}})
    families = scrape(api)
    assert value(families, "videogen_jobs_by_cache_method", method="dbcache") == 1
    assert value(families, "videogen_jobs_by_attention_backend", backend="native") == 1
    assert value(families, "videogen_blocks_skipped", **{"pass": "uncond"}) == 128
    assert value(families, "videogen_prompt_cache_hits") == 2
    assert value(families, "videogen_uptime_seconds") > 0


def test_the_scrape_costs_the_same_queries_for_many_jobs(api, history, settings, django_assert_max_num_queries):
    _workers(settings, history)
    with CaptureQueriesContext(connection) as few, django_assert_max_num_queries(SCRAPE_QUERIES):
        scrape(api)
    waiting = VideoJob.objects.get(status="InQueue", phase="waiting")
    services.request_cancel(request_id=waiting.request_id)  # ran() claims the job it submits
    for index in range(12):
        ran(params={**WIDE, "image_size": ["832*480", "480*832", "720*1280"][index % 3]},
            end=["Succeed", "Failed", "Cancelled"][index % 3], wait=index, duration=10 * index,
            timings={"encoding": 1.0, "denoising": float(index)})
        input_failure(f"IMAGE_CODE_{index % 4}")
    WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(job=history, event="completed", url="https://example.com/h", state="failed", attempts=5)
         for _ in range(20)])
    with CaptureQueriesContext(connection) as many, django_assert_max_num_queries(SCRAPE_QUERIES):
        families = scrape(api)
    assert len(many) == len(few)
    assert value(families, "videogen_jobs", status="Succeed") == 2 + 4


def test_prometheus_text_is_served_with_the_exposition_content_type(api):
    for response in (api.get("/metrics?format=prometheus"), api.get("/metrics", HTTP_ACCEPT=PROMETHEUS_ACCEPT),
                     api.get("/metrics", HTTP_ACCEPT="text/plain")):
        assert response.status_code == 200
        assert response["Content-Type"] == CONTENT_TYPE_LATEST
        text = response.content.decode()
        assert "# TYPE videogen_job_duration_seconds histogram" in text
        # A registry of its own: not this process's gc and process metrics of the default one.
        assert "python_gc" not in text and "process_" not in text
    assert api.get("/metrics")["Content-Type"] == "application/json"


def _counted(families) -> dict:
    """Every sample of the histograms and counters computed from finished jobs."""
    from videojobs.api.prometheus import HISTORIES

    names = {name[: -len("_total")] if name.endswith("_total") else name for name in HISTORIES}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for name in names for s in families[name].samples if not s.name.endswith("_created")}


def test_history_purge_keeps_histograms_and_counters_from_going_down(api, history):
    # Prometheus reads a counter that went down as a reset: the sweep that deletes old jobs
    # carries what they counted into MetricTotal first.
    WebhookDelivery.objects.create(job=VideoJob.objects.filter(status="Succeed").first(), event="completed",
                                   url="https://example.com/h", state="delivered", attempts=3)
    before = _counted(scrape(api))
    back = timedelta(days=40)  # the whole history moves back, each job's times keep their spans
    VideoJob.objects.filter(finished_at__isnull=False).update(
        created_at=F("created_at") - back, started_at=F("started_at") - back, finished_at=F("finished_at") - back)
    assert services.purge_finished_jobs(older_than_days=30) >= 6
    assert not VideoJob.objects.filter(finished_at__isnull=False).exists()
    after = scrape(api)
    assert _counted(after) == before
    assert value(after, "videogen_jobs", status="Succeed") == 0  # a gauge of the kept jobs
    # Jobs that end later add to the carried totals.
    services.request_cancel(request_id=VideoJob.objects.get(status="InQueue", phase="waiting").request_id)
    ran(params=SMALL, end="Succeed", wait=1, duration=30)
    again = _counted(scrape(api))
    key = ("videogen_job_duration_seconds_count", (("resolution", "832*480"), ("status", "Succeed")))
    assert again[key] == before[key] + 1
    assert services.purge_finished_jobs(older_than_days=30) == 0
