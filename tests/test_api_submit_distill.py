"""POST /video/submit with the distilled sampler: infer_steps and guidance follow the sampler,
and DEFAULT_SAMPLE_SOLVER decides the sampler of a request that names none."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from videojobs.models import VideoJob

pytestmark = pytest.mark.django_db

URL = "/video/submit"
ROOT = Path(__file__).resolve().parent.parent


def stored_params(api, body: dict) -> dict:
    response = api.post(URL, body, format="json")
    assert response.status_code == 202, response.content
    return VideoJob.objects.get(request_id=response.json()["requestId"]).params


def refusal(api, body: dict) -> dict:
    response = api.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "VALIDATION_ERROR"
    return response.json()


def test_distill_defaults_to_four_steps_without_guidance(api, valid_submit):
    params = stored_params(api, {**valid_submit, "sample_solver": "distill"})
    assert (params["sample_solver"], params["infer_steps"], params["guidance_scale"]) == ("distill", 4, 1.0)


@pytest.mark.parametrize("steps", [1, 8])
def test_distill_takes_one_to_eight_steps(api, valid_submit, steps):
    assert stored_params(api, {**valid_submit, "sample_solver": "distill", "infer_steps": steps})["infer_steps"] == steps


@pytest.mark.parametrize("steps", [0, 9, 30])
def test_distill_refuses_steps_outside_one_to_eight_naming_the_range(api, valid_submit, steps):
    body = refusal(api, {**valid_submit, "sample_solver": "distill", "infer_steps": steps})
    message = " ".join(body["fields"]["infer_steps"])
    assert ("between 1 and 8 for sample_solver distill" in message) or steps == 0  # 0: below the field's minimum


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
def test_the_other_samplers_keep_the_original_twenty_to_hundred(api, valid_submit, solver):
    body = refusal(api, {**valid_submit, "sample_solver": solver, "infer_steps": 4})
    assert f"between 20 and 100 for sample_solver {solver}" in body["fields"]["infer_steps"][0]
    assert "distill takes 1-8" in body["fields"]["infer_steps"][0]
    assert stored_params(api, {**valid_submit, "sample_solver": solver})["infer_steps"] == 30


def test_guidance_sent_with_distill_is_kept_for_the_status_warning(api, valid_submit):
    params = stored_params(api, {**valid_submit, "sample_solver": "distill", "guidance_scale": 5.0})
    assert params["guidance_scale"] == 5.0  # the daemon runs one pass and warns (tests/test_distill_sampler.py)


def test_default_sample_solver_distill_serves_the_fast_path(api, valid_submit, settings):
    settings.DEFAULT_SAMPLE_SOLVER = "distill"
    params = stored_params(api, valid_submit)
    assert (params["sample_solver"], params["infer_steps"], params["guidance_scale"]) == ("distill", 4, 1.0)
    # A sampler sent is used as sent.
    assert stored_params(api, {**valid_submit, "sample_solver": "unipc"})["infer_steps"] == 30


def test_default_distill_still_accepts_an_original_contract_request_with_its_steps(api, valid_submit, settings):
    settings.DEFAULT_SAMPLE_SOLVER = "distill"
    params = stored_params(api, {**valid_submit, "infer_steps": 30})
    assert (params["sample_solver"], params["infer_steps"], params["guidance_scale"]) == ("unipc", 30, 3.0)


def test_default_sample_solver_dpm_applies_to_requests_naming_none(api, valid_submit, settings):
    settings.DEFAULT_SAMPLE_SOLVER = "dpm++"
    assert stored_params(api, valid_submit)["sample_solver"] == "dpm++"


def test_a_bad_default_sample_solver_stops_the_settings_naming_the_variable():
    env = {**os.environ, "DEFAULT_SAMPLE_SOLVER": "fastest", "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DEFAULT_SAMPLE_SOLVER must be one of" in result.stderr
    assert "distill" in result.stderr
