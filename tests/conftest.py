"""Shared fixtures: every test runs against a real Postgres (embedded unless DATABASE_URL)."""
from __future__ import annotations

import io

import pytest
from PIL import Image
from rest_framework.test import APIClient

from config import embedded_db

# The tiny checkpoint, loaded once per session, for every module that asks for it.
from tests.inference_fixtures import cpu_ctx, tiny_ckpt, tiny_components  # noqa: F401


def pytest_sessionstart(session):
    # The settings only name the embedded Postgres (DATABASE_URL unset): the session starts it,
    # before any test database is created or any test's subprocess looks for it.
    embedded_db.start_if_configured()


def pytest_sessionfinish(session, exitstatus):
    # A test run leaves no server behind: the embedded Postgres stops if this run started it.
    embedded_db.stop_if_started_here()


@pytest.fixture(autouse=True)
def _isolated_files(settings, tmp_path):
    # Each test writes videos and inputs into its own folders.
    settings.OUTPUT_DIR = tmp_path / "generated_videos"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EXTRA_IMAGE_SIZES = ["64*64", "96*64"]
    settings.IMAGE_URL_ALLOWED_NETWORKS = []


@pytest.fixture
def api() -> APIClient:
    return APIClient()


VALID_SUBMIT = {
    "prompt": "A white cat wearing sunglasses sits on a surfboard",
    "image_url": "https://example.com/input.jpg",
}


@pytest.fixture
def valid_submit() -> dict:
    return dict(VALID_SUBMIT)


def png_bytes(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_job(**overrides):
    """A job row straight through the service, as the API would create it."""
    from videojobs import services

    fields = {
        "prompt": VALID_SUBMIT["prompt"],
        "image_url": VALID_SUBMIT["image_url"],
        "params": {"image_size": "64*64", "num_frames": 25, "infer_steps": 20},
    }
    fields.update(overrides)
    job, _ = services.submit_job(**fields)
    return job


def make_ready_job(**overrides):
    from videojobs import services

    job = make_job(**overrides)
    services.mark_input_ready(job_id=job.pk, image_path=f"inputs/{job.request_id}.png", sha256="0" * 64)
    job.refresh_from_db()
    return job
