"""--loras on `manage.py submit_video` and in the Python client: JSON list, or the form's text."""
from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser

from tests.conftest import png_bytes
from tests.test_cli_submit_video import PROMPT, RID, fake_api, submit_video  # noqa: F401 - the fake server fixture
from videojobs.api.serializers import form_data
from videojobs.client import VideoGenClient


def test_cli_loras_go_to_the_json_body_as_a_list(fake_api) -> None:  # noqa: F811
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    assert submit_video(fake_api, "--image", "https://example.com/cat.png", "--prompt", PROMPT,
                        "--loras", "distill:1,style.v2:-0.5") == 0
    (call,) = fake_api.called("POST", "/video/submit")
    assert json.loads(call.body)["loras"] == [{"name": "distill", "scale": 1.0}, {"name": "style.v2", "scale": -0.5}]


def test_cli_loras_none_sends_an_empty_list(fake_api) -> None:  # noqa: F811
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    submit_video(fake_api, "--image", "https://example.com/cat.png", "--prompt", PROMPT, "--loras", "none")
    (call,) = fake_api.called("POST", "/video/submit")
    assert json.loads(call.body)["loras"] == []


def test_a_bad_cli_scale_is_a_command_line_error(fake_api) -> None:  # noqa: F811
    with pytest.raises(Exception, match="must be in"):
        submit_video(fake_api, "--image", "https://example.com/cat.png", "--prompt", PROMPT, "--loras", "distill:9")
    assert fake_api.called("POST", "/video/submit") == []


@pytest.mark.parametrize("loras, expected", [
    ([{"name": "distill", "scale": 1.0}, {"name": "style", "scale": 0.25}],
     [{"name": "distill", "scale": 1.0}, {"name": "style", "scale": 0.25}]),
    ([], []),
])
def test_an_upload_sends_loras_as_form_text_the_server_reads_back(fake_api, tmp_path, loras, expected) -> None:  # noqa: F811
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes(64, 64))
    VideoGenClient(fake_api.base).submit(image=image, prompt=PROMPT, params={"loras": loras})
    (call,) = fake_api.called("POST", "/video/submit")
    meta = {"CONTENT_TYPE": call.headers["Content-Type"], "CONTENT_LENGTH": str(len(call.body))}
    form, files = MultiPartParser(meta, io.BytesIO(call.body), [MemoryFileUploadHandler()], "utf-8").parse()
    assert form_data(form, files)["loras"] == expected
