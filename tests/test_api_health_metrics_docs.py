"""GET /health, /metrics, /docs, /docs/schema and /videos/."""
from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.conftest import make_job
from videojobs import services

pytestmark = pytest.mark.django_db


def register(name="w1", state="idle"):
    services.register_worker(name=name, host="h", pid=1, world_size=2, topology={"ulysses_size": 1}, device="cpu", model="tiny")
    services.update_worker(name=name, state=state)


def test_health_is_503_with_a_reason_when_no_worker_is_ready(api):
    response = api.get("/health")
    assert response.status_code == 503
    assert "no inference worker" in response.json()["reason"]


def test_health_is_200_with_a_fresh_idle_worker(api):
    register()
    response = api.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["world_size"] == 2
    for key in ("timestamp", "uptime", "rank", "config", "service", "resources"):
        assert key in body


def test_health_reports_the_topology_the_ready_worker_runs_not_the_web_settings(api, settings):
    settings.DIT_FSDP, settings.ULYSSES_SIZE = False, None
    running = {"world_size": 8, "ulysses_size": 4, "ring_size": 1, "cfg_size": 2, "dit_fsdp": True,
               "t5_fsdp": False, "t5_cpu": True, "vae_parallel": True, "device": "cuda", "attention_backend": "native"}
    services.register_worker(name="g8", host="h", pid=1, world_size=8, topology=running, device="cuda:0", model="m")
    services.update_worker(name="g8", state="idle")
    config = api.get("/health").json()["config"]
    assert {k: config[k] for k in ("world_size", "ulysses_size", "cfg_size", "dit_fsdp", "t5_cpu", "vae_parallel")} == {
        "world_size": 8, "ulysses_size": 4, "cfg_size": 2, "dit_fsdp": True, "t5_cpu": True, "vae_parallel": True}
    assert config["source"] == "worker #1"  # an anonymous caller is not told the worker's host:pid name
    assert api.get("/metrics").json()["config"]["model"]["ulysses_size"] == 4


def test_health_without_a_worker_reports_the_configured_switches_as_such(api, settings):
    settings.T5_CPU = True
    config = api.get("/health").json()["config"]
    assert config["t5_cpu"] is True and config["world_size"] is None
    assert config["source"].startswith("settings")


def test_health_ignores_a_worker_whose_heartbeat_is_stale(api, settings):
    from videojobs.models import InferenceWorker

    register()
    InferenceWorker.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS + 5))
    assert api.get("/health").status_code == 503


def test_loading_worker_is_not_ready(api):
    register(state="loading")
    assert api.get("/health").status_code == 503


def test_metrics_has_the_original_shape(api, settings):
    settings.MAX_CONCURRENT_TASKS = 5
    make_job()
    body = api.get("/metrics").json()
    assert body["resources"] == {"concurrent_tasks": 1, "max_concurrent": 5, "available_slots": 4}
    assert body["service"]["total_tasks"] == 1
    assert set(body["config"]) == {"model", "business"}
    assert body["config"]["business"]["task_timeout"] == settings.TASK_TIMEOUT
    assert set(body["system"]) == {"rank", "world_size", "uptime"}
    assert body["jobs"]["InQueue"] == 1


def _prometheus_samples(text: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_as_prometheus_text(api):
    from prometheus_client import CONTENT_TYPE_LATEST

    make_job()
    response = api.get("/metrics?format=prometheus")
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    assert _prometheus_samples(response.content.decode())[("videogen_jobs", (("status", "InQueue"),))] == 1


def test_docs_ui_and_schema_are_served_offline(client):
    ui = client.get("/docs")
    assert ui.status_code == 200
    html = ui.content.decode()
    assert "swagger" in html.lower()
    assert "cdn" not in html.lower() and "//unpkg" not in html
    schema = client.get("/docs/schema", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/video/submit", "/video/status", "/video/cancel", "/health", "/metrics"):
        assert path in text


def test_video_file_is_served_and_unknown_is_404(client, settings):
    job = make_job()
    settings.OUTPUT_DIR.mkdir(parents=True)
    (settings.OUTPUT_DIR / f"{job.request_id}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    response = client.get(f"/videos/{job.request_id}.mp4")
    assert response.status_code == 200
    assert response["Content-Type"] == "video/mp4"
    assert client.get(f"/videos/{'0' * 32}.mp4").status_code == 404
    assert client.get("/videos/..%2F..%2Fetc%2Fpasswd.mp4").status_code == 404


def test_unknown_path_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404


def _finished_with(acceleration: dict) -> None:
    from videojobs.models import VideoJob

    job = make_job()
    VideoJob.objects.filter(pk=job.pk).update(status="Succeed", result={"acceleration": acceleration})


def test_metrics_count_what_the_caches_reused(api):
    _finished_with({"cache": {"method": "attention", "reused": {"cond": 38, "uncond": 38}}, "attention_backend": "native",
                    "prompt_cache_hits": 2})
    _finished_with({"cache": {"method": "none"}, "attention_backend": "_native_cudnn", "prompt_cache_hits": 1})
    _finished_with({"cache": {"method": "dbcache", "cached_steps": {"cond": 5, "uncond": 4},
                              "skipped_blocks": {"cond": 160, "uncond": 128}}, "attention_backend": "native",
                    "prompt_cache_hits": 0})
    stats = api.get("/metrics").json()["acceleration"]
    assert stats["jobs_by_cache_method"] == {"attention": 1, "none": 1, "dbcache": 1}
    assert stats["jobs_by_attention_backend"] == {"native": 2, "_native_cudnn": 1}
    assert stats["blocks_skipped"] == {"cond": 160, "uncond": 128}
    assert stats["attention_outputs_reused"] == {"cond": 38, "uncond": 38}
    assert stats["prompt_cache_hits"] == 3
    samples = _prometheus_samples(api.get("/metrics?format=prometheus").content.decode())
    assert samples[("videogen_jobs_by_cache_method", (("method", "attention"),))] == 1
    assert samples[("videogen_attention_outputs_reused", (("pass", "uncond"),))] == 38
    assert samples[("videogen_blocks_skipped", (("pass", "cond"),))] == 160


def test_metrics_count_jobs_by_sampler_and_the_dit_passes_they_ran(api):
    from videojobs.models import VideoJob

    for solver, forwards, status in (("distill", 4, "Succeed"), ("distill", 8, "Succeed"), ("unipc", 40, "Succeed"),
                                     ("unipc", 60, "Failed")):
        job = make_job(params={"image_size": "64*64", "num_frames": 25, "infer_steps": 20, "sample_solver": solver})
        VideoJob.objects.filter(pk=job.pk).update(status=status, result={
            "acceleration": {"cache": {"method": "none"}}, "dit_forwards": forwards})
    stats = api.get("/metrics").json()["acceleration"]
    assert stats["jobs_by_sample_solver"] == {"distill": 2, "unipc": 1}  # succeeded jobs only
    assert stats["dit_forwards"] == 4 + 8 + 40
    samples = _prometheus_samples(api.get("/metrics?format=prometheus").content.decode())
    assert samples[("videogen_jobs_by_sample_solver", (("solver", "distill"),))] == 2
    assert samples[("videogen_dit_forwards", ())] == 52


def test_the_admin_line_says_which_cache_ran_and_what_it_reused():
    from videojobs.selectors import acceleration_summary

    line = acceleration_summary(result={"acceleration": {
        "cache": {"method": "attention", "reused_steps_per_pass": 19, "reused": {"cond": 760, "uncond": 760}},
        "attention_backend": "_native_cudnn", "prompt_cache_hits": 1}})
    assert line == ("cache attention; 19 steps/pass reused (cond 760, uncond 760 attention outputs); "
                    "attention _native_cudnn; prompt cache hits 1")
    assert acceleration_summary(result={}) == "-"
    distilled = acceleration_summary(result={"acceleration": {"cache": {"method": "none"}, "attention_backend": "native",
                                                               "prompt_cache_hits": 0}, "dit_forwards": 4})
    assert distilled == "cache none; attention native; prompt cache hits 0; DiT passes 4"


def test_anonymous_callers_see_no_host_pid_model_path_or_jobs(api):
    from videojobs.models import InferenceWorker

    register()
    InferenceWorker.objects.update(model="/data/models/Wan2.1-I2V-14B-720P-Diffusers", host="gpu-node-7", pid=4242)
    for path in ("/health", "/metrics"):
        body = api.get(path).content.decode()
        assert "/data/models" not in body and "gpu-node-7" not in body and "4242" not in body, path
    worker = api.get("/health").json()["workers"]["workers"][0]
    assert worker["name"] == "#1" and worker["state"] == "idle" and "host" not in worker


def test_operators_logged_into_the_admin_see_everything(api, django_user_model):
    from videojobs.models import InferenceWorker

    register()
    InferenceWorker.objects.update(model="/data/models/Wan", host="gpu-node-7", pid=4242)
    api.force_login(django_user_model.objects.create_user("ops", password="x", is_staff=True))
    worker = api.get("/health").json()["workers"]["workers"][0]
    assert (worker["host"], worker["pid"], worker["model"], worker["name"]) == ("gpu-node-7", 4242, "/data/models/Wan", "w1")


def test_the_openapi_schema_is_the_committed_one():
    # docs/openapi.yaml is the API contract as published: a change to it is deliberate
    # (`python manage.py spectacular --file docs/openapi.yaml`), never a side effect of a refactor.
    committed = (Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml").read_text()
    out = io.StringIO()
    call_command("spectacular", stdout=out)
    assert out.getvalue() == committed
