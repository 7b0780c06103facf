"""LoRA adapters through the API: GET /loras, the submit's loras field, DEFAULT_LORAS, the status
document, /metrics, and the claim that only a worker holding a job's adapters may make."""
from __future__ import annotations

import pytest

from tests.conftest import make_ready_job
from videojobs import services
from videojobs.models import VideoJob

pytestmark = pytest.mark.django_db

ENTRY = {"format": "wan", "rank": 64, "size_bytes": 1000, "sha256": "0123456789ab", "memory_bytes": 4000}


def _worker(name: str, loras: list[str], state: str = "idle") -> None:
    services.register_worker(name=name, host="h", pid=1, world_size=1, topology={}, device="cpu", model="tiny")
    services.update_worker(name=name, state=state, loras=[{"name": lora, **ENTRY} for lora in loras])


def _submit(api, valid_submit, **extra):
    return api.post("/video/submit", {**valid_submit, **extra}, format="json")


def test_get_loras_lists_each_held_adapter_with_its_workers(api) -> None:
    _worker("w1", ["distill", "style.v2"])
    _worker("w2", ["style.v2"])
    _worker("gone", ["old"], state="stopped")
    body = api.get("/loras").json()
    assert [item["name"] for item in body["loras"]] == ["distill", "style.v2"]
    style = body["loras"][1]
    assert {key: style[key] for key in ENTRY} == ENTRY
    assert len(style["workers"]) == 2
    assert body["max_per_job"] == 4 and body["scale_range"] == [-2.0, 2.0]


def test_a_submit_with_held_loras_stores_them_and_the_status_shows_them(api, valid_submit) -> None:
    _worker("w1", ["distill", "style.v2"])
    response = _submit(api, valid_submit, loras=[{"name": "distill", "scale": 1.0}, {"name": "style.v2", "scale": -0.5}])
    assert response.status_code == 202, response.content
    request_id = response.json()["requestId"]
    expected = [{"name": "distill", "scale": 1.0}, {"name": "style.v2", "scale": -0.5}]
    assert VideoJob.objects.get(request_id=request_id).params["loras"] == expected
    assert api.post("/video/status", {"requestId": request_id}, format="json").json()["loras"] == expected


def test_the_scale_defaults_to_one(api, valid_submit) -> None:
    _worker("w1", ["distill"])
    request_id = _submit(api, valid_submit, loras=[{"name": "distill"}]).json()["requestId"]
    assert VideoJob.objects.get(request_id=request_id).params["loras"] == [{"name": "distill", "scale": 1.0}]


def test_an_unknown_lora_gets_a_400_naming_it_and_listing_the_available_ones(api, valid_submit) -> None:
    _worker("w1", ["distill", "style.v2"])
    response = _submit(api, valid_submit, loras=[{"name": "distill"}, {"name": "nope", "scale": 1}])
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "VALIDATION_ERROR"
    assert "'nope'" in body["message"] and "available: distill, style.v2" in body["message"]
    assert body["available_loras"] == ["distill", "style.v2"]
    assert "loras" in body["fields"]
    assert not VideoJob.objects.exists()


@pytest.mark.parametrize("scale", [2.5, -2.01, "strong", None])
def test_a_scale_out_of_range_or_not_a_number_is_refused(api, valid_submit, scale) -> None:
    _worker("w1", ["distill"])
    response = _submit(api, valid_submit, loras=[{"name": "distill", "scale": scale}])
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR" and "loras" in response.json()["fields"]


@pytest.mark.parametrize("loras", [
    [{"name": f"l{i}"} for i in range(5)],  # more than 4
    [{"name": "distill"}, {"name": "distill", "scale": 0.5}],  # named twice
    [{"name": "../etc/passwd"}],  # not a file stem
    [{"scale": 1.0}],  # no name
    "distill",  # not a list
])
def test_a_malformed_loras_field_is_refused(api, valid_submit, loras) -> None:
    _worker("w1", ["distill"] + [f"l{i}" for i in range(5)])
    response = _submit(api, valid_submit, loras=loras)
    assert response.status_code == 400, response.content
    assert "loras" in response.json()["fields"]


def test_default_loras_apply_when_a_request_sends_none_and_an_empty_list_means_none(api, valid_submit, settings) -> None:
    _worker("w1", ["distill"])
    settings.DEFAULT_LORAS = [{"name": "distill", "scale": 1.0}]
    defaulted = _submit(api, valid_submit).json()["requestId"]
    assert VideoJob.objects.get(request_id=defaulted).params["loras"] == [{"name": "distill", "scale": 1.0}]
    chose_none = _submit(api, valid_submit, loras=[], seed=5).json()["requestId"]
    assert "loras" not in VideoJob.objects.get(request_id=chose_none).params
    assert api.post("/video/status", {"requestId": chose_none}, format="json").json()["loras"] == []


def test_a_default_lora_no_worker_holds_is_refused_by_name(api, valid_submit, settings) -> None:
    settings.DEFAULT_LORAS = [{"name": "distill", "scale": 1.0}]
    response = _submit(api, valid_submit)
    assert response.status_code == 400
    assert "'distill'" in response.json()["message"] and response.json()["available_loras"] == []


def test_a_multipart_submit_takes_loras_as_name_scale_text(api, valid_submit) -> None:
    _worker("w1", ["distill", "style.v2"])
    response = api.post("/video/submit", {**valid_submit, "loras": "distill:1, style.v2:0.25"}, format="multipart")
    assert response.status_code == 202, response.content
    params = VideoJob.objects.get(request_id=response.json()["requestId"]).params
    assert params["loras"] == [{"name": "distill", "scale": 1.0}, {"name": "style.v2", "scale": 0.25}]


def test_a_job_is_claimed_only_by_a_worker_that_holds_its_loras() -> None:
    _worker("plain", [])
    _worker("partial", ["distill"])
    _worker("full", ["distill", "style.v2"])
    job = make_ready_job(params={"image_size": "64*64", "num_frames": 25, "infer_steps": 20,
                                 "loras": [{"name": "distill", "scale": 1.0}, {"name": "style.v2", "scale": 0.5}]})
    assert services.claim_next_job(worker="plain") is None
    assert services.claim_next_job(worker="partial") is None
    claimed = services.claim_next_job(worker="full")
    assert claimed is not None and claimed.pk == job.pk


def test_a_job_without_loras_is_claimed_by_any_worker() -> None:
    _worker("plain", [])
    job = make_ready_job()
    assert services.claim_next_job(worker="plain").pk == job.pk


def test_metrics_count_jobs_by_lora(api) -> None:
    _worker("w1", ["distill", "style.v2"])
    make_ready_job(params={"image_size": "64*64", "loras": [{"name": "distill", "scale": 1.0}]})
    make_ready_job(params={"image_size": "64*64", "loras": [{"name": "distill", "scale": 1.0},
                                                            {"name": "style.v2", "scale": 0.3}]})
    make_ready_job(params={"image_size": "64*64"})
    assert api.get("/metrics").json()["jobs_by_lora"] == {"distill": 2, "none": 1, "style.v2": 1}
    text = api.get("/metrics", HTTP_ACCEPT="text/plain").content.decode()
    assert 'videogen_jobs_by_lora{lora="distill"} 2.0' in text
