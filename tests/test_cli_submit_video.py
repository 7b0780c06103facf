"""`manage.py submit_video` and `videojobs.client`: against a scripted fake API, then the real service."""
from __future__ import annotations

import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import imageio.v2 as imageio
import pytest
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.core.management import call_command
from django.http.multipartparser import MultiPartParser

from tests.conftest import png_bytes
from tests.daemon_support import ROOT, service_env, wait_for
from tests.test_run_service import free_port, start
from videojobs import cli
from videojobs.client import VideoGenClient

RID = "3f0c4d6e2a8b4f0e9c1d5a7b6e8f9a0b"
PROMPT = "A serene lake with a swan gracefully swimming"
MP4 = b"\x00\x00\x00\x18ftypisom" + b"fake video bytes" * 64


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApi:
    """Answers each (method, path) from a script; the last answer of a route repeats."""

    base: str = ""
    routes: dict[tuple[str, str], list[tuple[int, object, dict]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def script(self, method: str, path: str, *answers) -> None:
        self.routes[(method, path)] = [a if isinstance(a, tuple) else (200, a, {}) for a in answers]

    def answer(self, method: str, path: str) -> tuple[int, object, dict]:
        queue = self.routes.get((method, path))
        if not queue:
            return 404, {"error": "NOT_FOUND", "message": f"nothing scripted for {method} {path}"}, {}
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def called(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if (c.method, c.path) == (method, path)]


def _handler(api: FakeApi):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            api.calls.append(Call(self.command, self.path, dict(self.headers), body))
            status, payload, headers = api.answer(self.command, self.path)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.fixture
def fake_api():
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


def doc(status: str, **fields) -> dict:
    document = {"requestId": RID, "status": status, "reason": None, "error_code": None, "results": None,
                "queue_position": None, "progress": 0.0, "phase": "preparing", "step": 0, "total_steps": 0,
                "eta_seconds": None, "cancel_requested": False}
    return {**document, **fields}


def running(step: int, total: int = 4, **fields) -> dict:
    return doc("InProgress", phase="denoising", step=step, total_steps=total,
               progress=round(0.1 + 0.8 * step / total, 4), eta_seconds=2.0 * (total - step), **fields)


SUCCEEDED = doc("Succeed", phase="done", progress=1.0, results={"video_url": f"/videos/{RID}.mp4", "frames": 25})


def submit_video(api: FakeApi, *args: str) -> int:
    """The command as a shell runs it; its exit code (0 when it returns)."""
    try:
        call_command("submit_video", "--server", api.base, *args)
    except SystemExit as exit_:
        return exit_.code
    return 0


def job_args(image: str | Path) -> list[str]:
    return ["--image", str(image), "--prompt", PROMPT, "--size", "64*64", "--frames", "25", "--steps", "4"]


@pytest.fixture
def png(tmp_path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes(64, 64))
    return path


class TtyInput(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_local_image_is_uploaded_as_a_multipart_form_django_parses(fake_api, png):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    client = VideoGenClient(fake_api.base, api_key="k3y")
    params = {"image_size": "64*64", "num_frames": 25, "infer_steps": 20, "guidance_scale": 4.5, "seed": None}

    assert client.submit(image=png, prompt=PROMPT, params=params) == RID

    (call,) = fake_api.called("POST", "/video/submit")
    meta = {"CONTENT_TYPE": call.headers["Content-Type"], "CONTENT_LENGTH": str(len(call.body))}
    form, files = MultiPartParser(meta, io.BytesIO(call.body), [MemoryFileUploadHandler()], "utf-8").parse()
    assert form.dict() == {"prompt": PROMPT, "image_size": "64*64", "num_frames": "25", "infer_steps": "20",
                           "guidance_scale": "4.5"}  # seed None is left out: the server picks one
    assert files["image"].name == "in.png" and files["image"].content_type == "image/png"
    assert files["image"].read() == png.read_bytes()
    assert call.headers["Authorization"] == "Bearer k3y"
    assert re.fullmatch(r"[0-9a-f]{32}", call.headers["Idempotency-Key"])


def test_image_url_is_sent_as_json_with_typed_numbers(fake_api):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    client = VideoGenClient(fake_api.base)

    client.submit(image="https://example.com/cat.png", prompt=PROMPT, params={"num_frames": 25, "sample_shift": 3.0},
                  idempotency_key="mine-1")

    (call,) = fake_api.called("POST", "/video/submit")
    assert call.headers["Content-Type"] == "application/json" and "Authorization" not in call.headers
    assert json.loads(call.body) == {"prompt": PROMPT, "image_url": "https://example.com/cat.png",
                                     "num_frames": 25, "sample_shift": 3.0}
    assert call.headers["Idempotency-Key"] == "mine-1"


def test_without_wait_prints_only_the_request_id(fake_api, png, capsys):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))

    assert submit_video(fake_api, *job_args(png)) == 0

    assert capsys.readouterr().out == RID + "\n"
    assert fake_api.called("GET", f"/video/{RID}") == []


def test_wait_shows_queue_place_then_phase_and_steps_moving_and_downloads(fake_api, png, tmp_path, capsys):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    fake_api.script("GET", f"/video/{RID}",
                    doc("InQueue", queue_position=2), doc("InQueue", queue_position=1),
                    doc("InProgress", phase="encoding", progress=0.05),
                    running(1), running(2), running(3), running(4),
                    doc("InProgress", phase="decoding", progress=0.9), SUCCEEDED)
    fake_api.script("GET", f"/videos/{RID}.mp4", (200, MP4, {"Content-Type": "video/mp4"}))
    output = tmp_path / "out" / "swan.mp4"

    assert submit_video(fake_api, *job_args(png), "--wait", "--poll", "0", "--output", str(output)) == 0

    captured = capsys.readouterr()
    assert captured.out == f"{output}\n"
    assert output.read_bytes() == MP4 and not output.with_name("swan.mp4.part").exists()
    frames = re.split(r"[\r\n]+", captured.err)
    assert any("queued, position 2" in f for f in frames) and any("queued, position 1" in f for f in frames)
    assert any("encoding" in f for f in frames) and any("decoding" in f for f in frames)
    assert any("denoising step 2/4" in f and "ETA 00:04" in f for f in frames)
    percentages = {int(p) for p in re.findall(r"(\d+)%\|", captured.err)}
    assert {0, 5, 30, 50, 70, 90, 100} <= percentages


def test_failed_job_exits_with_the_failed_code_and_prints_its_reason(fake_api, png, capsys):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    fake_api.script("GET", f"/video/{RID}", running(1),
                    doc("Failed", reason="image_url returned HTTP 404", error_code="INPUT_ERROR"))

    assert submit_video(fake_api, *job_args(png), "--wait", "--poll", "0") == cli.EXIT_FAILED

    err = capsys.readouterr().err
    assert f"job {RID} failed [INPUT_ERROR]: image_url returned HTTP 404" in err
    assert fake_api.called("GET", f"/videos/{RID}.mp4") == []


def test_job_cancelled_elsewhere_exits_with_the_cancelled_code(fake_api, png, capsys):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    fake_api.script("GET", f"/video/{RID}", doc("Cancelled", reason="cancelled by the client"))

    assert submit_video(fake_api, *job_args(png), "--wait", "--poll", "0") == cli.EXIT_CANCELLED
    assert "was cancelled: cancelled by the client" in capsys.readouterr().err


def test_submit_retries_503_with_the_same_idempotency_key_until_accepted(fake_api, png, capsys):
    unavailable = (503, {"error": "DATABASE_UNAVAILABLE", "message": "retry shortly"}, {"Retry-After": "0"})
    fake_api.script("POST", "/video/submit", unavailable, unavailable, (202, {"requestId": RID}, {}))

    assert submit_video(fake_api, *job_args(png)) == 0

    assert capsys.readouterr().out == RID + "\n"
    keys = {c.headers["Idempotency-Key"] for c in fake_api.called("POST", "/video/submit")}
    assert len(fake_api.called("POST", "/video/submit")) == 3 and len(keys) == 1


def test_poll_retries_429_and_503_then_follows_on(fake_api):
    fake_api.script("GET", f"/video/{RID}", (429, {"error": "THROTTLED", "message": "slow down"}, {"Retry-After": "0"}),
                    (503, {"error": "DATABASE_UNAVAILABLE", "message": "retry"}, {"Retry-After": "0"}), SUCCEEDED)

    assert VideoGenClient(fake_api.base).wait(RID, poll=0)["status"] == "Succeed"
    assert len(fake_api.called("GET", f"/video/{RID}")) == 3


def test_submit_does_not_retry_a_full_queue_and_exits_refused(fake_api, png, capsys):
    fake_api.script("POST", "/video/submit",
                    (429, {"error": "QUEUE_FULL", "message": "the server is busy"}, {"Retry-After": "30"}))

    assert submit_video(fake_api, *job_args(png)) == cli.EXIT_REFUSED
    assert "QUEUE_FULL (HTTP 429): the server is busy" in capsys.readouterr().err
    assert len(fake_api.called("POST", "/video/submit")) == 1


def test_validation_error_names_each_field_and_exits_refused(fake_api, png, capsys):
    fields = {"num_frames": ["must be of the form 4k+1 (got 26); nearest valid values: 25 or 29"]}
    fake_api.script("POST", "/video/submit",
                    (400, {"error": "VALIDATION_ERROR", "message": "num_frames: ...", "fields": fields}, {}))

    assert submit_video(fake_api, "--image", str(png), "--prompt", PROMPT, "--frames", "26") == cli.EXIT_REFUSED
    assert "num_frames: must be of the form 4k+1 (got 26)" in capsys.readouterr().err


def test_unreachable_server_exits_unavailable_after_its_retries(png, capsys):
    client = VideoGenClient("http://127.0.0.1:9", retries=1)
    invocation = cli.Invocation(server=client.server, image=str(png), prompt=PROMPT)

    assert cli.run(invocation, client=client) == cli.EXIT_UNAVAILABLE
    assert "did not answer" in capsys.readouterr().err


def test_expired_video_exits_refused_without_leaving_a_partial_file(fake_api, tmp_path, capsys):
    fake_api.script("GET", f"/video/{RID}", SUCCEEDED)
    fake_api.script("GET", f"/videos/{RID}.mp4", (410, {"error": "GONE", "message": "the video was deleted"}, {}))
    output = tmp_path / "v.mp4"

    assert submit_video(fake_api, "--follow", RID, "--poll", "0", "--output", str(output)) == cli.EXIT_REFUSED
    assert "GONE (HTTP 410)" in capsys.readouterr().err
    assert list(tmp_path.glob("v.mp4*")) == []


def interrupt_second_poll(monkeypatch) -> None:
    """Ctrl-C lands while the command waits for its second status answer."""
    real_status, polls = VideoGenClient.status, itertools.count()

    def status(self, request_id):
        if next(polls) == 1:
            raise KeyboardInterrupt
        return real_status(self, request_id)

    monkeypatch.setattr(VideoGenClient, "status", status)


def test_ctrl_c_answered_yes_cancels_waits_for_the_end_and_exits_130(fake_api, png, monkeypatch, capsys):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    fake_api.script("GET", f"/video/{RID}", running(1), running(2, cancel_requested=True),
                    doc("Cancelled", reason="cancelled by the client"))
    fake_api.script("POST", "/video/cancel", {"status": "Cancelled", "requestId": RID, "job_status": "InProgress",
                                              "message": "cancel requested; the job stops at its next step"})
    interrupt_second_poll(monkeypatch)
    monkeypatch.setattr(sys, "stdin", TtyInput("y\n"))

    assert submit_video(fake_api, *job_args(png), "--wait", "--poll", "0") == cli.EXIT_INTERRUPTED

    err = capsys.readouterr().err
    assert f"Cancel job {RID}? [y/N]" in err
    assert [json.loads(c.body) for c in fake_api.called("POST", "/video/cancel")] == [{"requestId": RID}]
    assert f"job {RID} ended Cancelled: cancelled by the client" in err
    assert len(fake_api.called("GET", f"/video/{RID}")) == 3  # it waited for the end


def test_ctrl_c_answered_no_leaves_the_job_running(fake_api, png, monkeypatch, capsys):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    fake_api.script("GET", f"/video/{RID}", running(1))
    interrupt_second_poll(monkeypatch)
    monkeypatch.setattr(sys, "stdin", TtyInput("\n"))

    assert submit_video(fake_api, *job_args(png), "--wait", "--poll", "0") == cli.EXIT_INTERRUPTED

    assert fake_api.called("POST", "/video/cancel") == []
    assert f"--follow {RID}" in capsys.readouterr().err


@pytest.mark.parametrize("flag, cancels", [((), False), (("--cancel-on-interrupt",), True)])
def test_ctrl_c_without_a_terminal_cancels_only_with_cancel_on_interrupt(fake_api, png, monkeypatch, capsys,
                                                                         flag, cancels):
    fake_api.script("POST", "/video/submit", (202, {"requestId": RID}, {}))
    fake_api.script("GET", f"/video/{RID}", running(1), doc("Cancelled", reason="cancelled by the client"))
    fake_api.script("POST", "/video/cancel", (409, {"error": "ALREADY_FINISHED", "message": "ended"}, {}))
    interrupt_second_poll(monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a TTY: nobody is asked

    assert submit_video(fake_api, *job_args(png), "--wait", "--poll", "0", *flag) == cli.EXIT_INTERRUPTED

    assert len(fake_api.called("POST", "/video/cancel")) == int(cancels)
    assert "[y/N]" not in capsys.readouterr().err


def test_missing_prompt_is_a_command_line_error(png):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--prompt required") as error:
        call_command("submit_video", "--image", str(png))
    assert error.value.returncode == 2



def test_client_and_cli_modules_import_neither_django_nor_torch():
    code = ("import sys, videojobs.client, videojobs.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'torch'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- end to end: the real service (web, qcluster, daemon on the tiny model) -----------------------


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def service(env: dict[str, str], log: Path):
    """`manage.py run_service` for the block; Ctrl-C (SIGINT) stops it with all its children."""
    process = start(env, log)
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_cli_uploads_a_local_image_follows_a_moving_bar_and_saves_a_playable_video(tiny_ckpt, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(tiny_ckpt, SERVER_HOST="127.0.0.1", SERVER_PORT=port, WEB_WORKERS=1, Q_WORKERS=1,
                      STATIC_ROOT=tmp_path / "static", VAR_DIR=tmp_path / "var")
    log = tmp_path / "service.log"
    image, output = tmp_path / "in.png", tmp_path / "videos" / "out.mp4"
    image.write_bytes(png_bytes(96, 80, color=(40, 120, 200)))
    with service(env, log):
        wait_for(lambda: healthy(base), timeout=120, interval=0.5, what="/health 200", log=log)
        result = subprocess.run(
            [sys.executable, "manage.py", "submit_video", "--server", base, *job_args(image)[:-2], "--steps", "100",
             "--seed", "7", "--wait", "--poll", "0.1", "--output", str(output)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
    assert result.returncode == 0, result.stderr + log.read_text(errors="replace")[-3000:]
    assert result.stdout == f"{output}\n"
    steps = {int(s) for s in re.findall(r"denoising step (\d+)/100", result.stderr)}
    percentages = {int(p) for p in re.findall(r"(\d+)%\|", result.stderr)}
    assert len(steps) >= 2 and len(percentages) >= 4 and 100 in percentages, result.stderr
    assert len(imageio.mimread(output)) == 25
