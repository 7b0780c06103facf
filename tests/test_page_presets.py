"""The job page's presets: "Fast (4 steps)" (the distilled sampler) and "Quality"; the detailed
inputs still win over the preset."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django.asserts import assertInHTML

from tests.conftest import VALID_SUBMIT, png_bytes
from videojobs.models import VideoJob

pytestmark = pytest.mark.django_db

FORM = {"prompt": VALID_SUBMIT["prompt"], "image_size": "64*64", "num_frames": "25"}


def submitted_params(client, **fields) -> dict:
    upload = SimpleUploadedFile("input.png", png_bytes(), "image/png")
    response = client.post("/", {**FORM, **fields, "image": upload})
    assert response.status_code == 302, response.content.decode()[-2000:]
    return VideoJob.objects.get().params


def test_the_page_offers_fast_and_quality_with_quality_chosen_by_default(client):
    html = client.get("/").content.decode()
    assertInHTML('<option value="fast">Fast (4 steps)</option>', html)
    assertInHTML('<option value="quality" selected>Quality</option>', html)


def test_with_default_sample_solver_distill_the_page_starts_on_fast(client, settings):
    settings.DEFAULT_SAMPLE_SOLVER = "distill"
    assertInHTML('<option value="fast" selected>Fast (4 steps)</option>', client.get("/").content.decode())


def test_fast_submits_four_distilled_steps_without_guidance(client):
    params = submitted_params(client, preset="fast")
    assert (params["sample_solver"], params["infer_steps"], params["guidance_scale"]) == ("distill", 4, 1.0)


def test_quality_submits_the_original_sampler_even_when_the_server_defaults_to_distill(client, settings):
    settings.DEFAULT_SAMPLE_SOLVER = "distill"
    params = submitted_params(client, preset="quality")
    assert (params["sample_solver"], params["infer_steps"], params["guidance_scale"]) == ("unipc", 30, 3.0)


def test_the_detailed_inputs_override_the_preset(client):
    params = submitted_params(client, preset="fast", sample_solver="dpm++", infer_steps="20", guidance_scale="4.5")
    assert (params["sample_solver"], params["infer_steps"], params["guidance_scale"]) == ("dpm++", 20, 4.5)


def test_fast_with_too_many_steps_shows_the_range_under_the_steps(client):
    upload = SimpleUploadedFile("input.png", png_bytes(), "image/png")
    response = client.post("/", {**FORM, "preset": "fast", "infer_steps": "20", "image": upload})
    assert response.status_code == 400
    assert "between 1 and 8 for sample_solver distill" in response.content.decode()
    assert not VideoJob.objects.exists()
