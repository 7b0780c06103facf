"""manage.py submit_video --solver distill: the distilled sampler reaches the API as chosen."""
from __future__ import annotations

import io

from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser

from tests.test_cli_submit_video import RID, fake_api, job_args, png, submit_video  # noqa: F401 - fixtures


def test_the_distilled_sampler_is_sent_as_chosen(fake_api, png):  # noqa: F811
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))

    assert submit_video(fake_api, *job_args(png), "--solver", "distill") == 0

    (call,) = fake_api.called("POST", "/video/submit")
    meta = {"CONTENT_TYPE": call.headers["Content-Type"], "CONTENT_LENGTH": str(len(call.body))}
    form, _ = MultiPartParser(meta, io.BytesIO(call.body), [MemoryFileUploadHandler()], "utf-8").parse()
    assert (form["sample_solver"], form["infer_steps"]) == ("distill", "4")
