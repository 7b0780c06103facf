"""The job page's LoRA picker: the held adapters as suggestions, a choice submitted, an unknown one refused in place."""
from __future__ import annotations

import pytest

from tests.test_pages import GOOD_FORM, errors_of, field_block, upload
from videojobs import services
from videojobs.models import VideoJob

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def worker() -> None:
    services.register_worker(name="w1", host="h", pid=1, world_size=1, topology={}, device="cpu", model="tiny")
    services.update_worker(name="w1", state="idle", loras=[{"name": name, "format": "wan", "rank": 4, "size_bytes": 1,
                                                            "sha256": "0" * 12, "memory_bytes": 8}
                                                           for name in ("distill", "style.v2")])


def test_the_picker_suggests_the_adapters_the_workers_hold(client) -> None:
    block = field_block(client.get("/").content.decode(), "loras")
    assert 'list="id_loras_choices"' in block
    assert '<option value="distill:1">' in block and '<option value="style.v2:1">' in block
    assert "Held: distill, style.v2" in block


def test_a_chosen_lora_reaches_the_job(client) -> None:
    response = client.post("/", {**GOOD_FORM, "loras": "style.v2:0.5", "image": upload()})
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert VideoJob.objects.get().params["loras"] == [{"name": "style.v2", "scale": 0.5}]


def test_an_unknown_lora_is_shown_under_the_picker(client) -> None:
    response = client.post("/", {**GOOD_FORM, "loras": "nope:1", "image": upload()})
    assert response.status_code == 400
    (error,) = errors_of(response.content.decode(), "loras")
    assert "&#x27;nope&#x27;" in error or "'nope'" in error
    assert "available: distill, style.v2" in error
