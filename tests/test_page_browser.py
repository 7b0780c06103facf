"""The job page end to end in a real headless Chromium against the real service (`manage.py
run_service`: gunicorn, qcluster and the inference daemon on the tiny model).

A user logs in, uploads a picture, watches the progress bar move, plays the finished video
and downloads it through the session, then cancels a second job from its page. The browser
is Debian's system Chromium (`make test` installs it) driven by Playwright's Python client;
Playwright's own browser downloads are never used. Where it is missing the test fails under
CI and is skipped elsewhere. UPDATE_SCREENSHOTS=1 refreshes docs/job-page.png.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.daemon_support import ROOT, running, service_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]
SCREENSHOT = ROOT / "docs" / "job-page.png"
PASSWORD = "a long test password"


@contextmanager
def chromium():
    """Debian's Chromium under Playwright. Playwright runs an event loop in this thread, so the
    test touches the database (through Django) only before this starts."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.access(CHROMIUM, os.X_OK):
        missing = "playwright (pip install -r requirements-dev.txt)" if sync_playwright is None else (
            "Chromium (make browser, or apt-get install chromium)")
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs {missing}")
        pytest.skip(f"the browser test needs {missing}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def picture(path: Path) -> Path:
    """An input worth a thumbnail: a sky, a sun and a hill."""
    image = Image.new("RGB", (320, 240), (90, 150, 220))
    draw = ImageDraw.Draw(image)
    for y in range(240):
        draw.line([(0, y), (320, y)], fill=(90 + y // 3, 150 + y // 4, 220))
    draw.ellipse((210, 30, 270, 90), fill=(255, 210, 80))
    draw.ellipse((-80, 150, 260, 360), fill=(60, 150, 80))
    image.save(path)
    return path


def submit(page, base: str, image: Path, prompt: str, *, frames: int, steps: int) -> str:
    page.goto(base + "/")
    page.set_input_files("#id_image", str(image))
    page.fill("#id_prompt", prompt)
    page.select_option("#id_image_size", "64*64")
    page.fill("#id_num_frames", str(frames))
    page.fill("#id_infer_steps", str(steps))
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}/jobs/*")
    return page.url.rsplit("/", 1)[1]


def progress_readings(page, *, timeout: float) -> list[int]:
    """The progress bar's value, read every 50 ms until the finished panel replaces it."""
    readings: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate("() => { const bar = document.querySelector('#job-progress');"
                              " return bar ? Number(bar.value) : null; }")
        if value is None and page.query_selector("#panel[data-status='Succeed']"):
            return readings
        if value is not None and (not readings or readings[-1] != value):
            readings.append(value)
        time.sleep(0.05)
    raise AssertionError(f"the job did not finish in {timeout} s; progress seen: {readings}")


def test_a_user_makes_watches_plays_downloads_and_cancels_jobs_in_chromium(tiny_ckpt, tmp_path, django_user_model):
    django_user_model.objects.create_user("ada", password=PASSWORD)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(tiny_ckpt, SERVER_HOST="127.0.0.1", SERVER_PORT=port, WEB_WORKERS=1, Q_WORKERS=1,
                      API_KEYS_REQUIRED="true", STATIC_ROOT=tmp_path / "static", VAR_DIR=tmp_path / "var")
    log = tmp_path / "service.log"
    image = picture(tmp_path / "hill.png")
    with running([sys.executable, "manage.py", "run_service"], env, log), chromium() as browser:
        wait_for(lambda: answers(base + "/health"), timeout=180, interval=0.5, what="/health 200", log=log)
        context = browser.new_context(viewport={"width": 1180, "height": 900})
        page = context.new_page()
        # 1. The page asks for a login (keys are required here), then shows the form.
        page.goto(base + "/")
        assert "/accounts/login/" in page.url
        page.fill("#id_username", "ada")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        # 2. Upload, submit, and watch the bar move while the daemon denoises.
        submit(page, base, image, "A sunny hill under a blue sky, clouds drifting by", frames=81, steps=100)
        readings = progress_readings(page, timeout=240)
        assert readings == sorted(readings) and len(readings) >= 3, readings
        assert any(5 < value < 90 for value in readings), f"no denoising step seen: {readings}"
        # 3. The video element loads and plays; the download link serves the mp4 to this session.
        video = page.wait_for_selector("#job-video")
        page.wait_for_function("() => document.querySelector('#job-video').readyState >= 2", timeout=30_000)
        page.evaluate("() => { const v = document.querySelector('#job-video'); v.muted = true; return v.play(); }")
        page.wait_for_function("() => document.querySelector('#job-video').currentTime > 0", timeout=30_000)
        assert video.evaluate("v => v.error === null && v.duration > 0")
        download = context.request.get(base + page.get_attribute("#download-link", "href"))
        assert download.status == 200 and download.headers["content-type"] == "video/mp4"
        assert download.body()[4:8] == b"ftyp"
        finished_shot = page.screenshot(full_page=True)
        # 4. A second, long job is cancelled from its page.
        submit(page, base, image, "The same hill at night, stars turning slowly overhead", frames=81, steps=100)
        page.click("#cancel-button")
        page.wait_for_selector("#job-status[data-status='Cancelled']", timeout=90_000)
        assert page.inner_text("#job-status") == "Cancelled"
        # 5. The list shows both jobs, their thumbnails and their states.
        page.goto(base + "/")
        states = page.eval_on_selector_all("#recent .badge", "badges => badges.map(b => b.dataset.status)")
        assert states == ["Cancelled", "Succeed"]
        page.wait_for_function("() => [...document.querySelectorAll('#recent img.thumb')]"
                               ".every(img => img.complete && img.naturalWidth > 0)")
        assert page.eval_on_selector_all("#recent img.thumb", "imgs => imgs.length") == 2
        index_shot = page.screenshot()
        context.close()
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        save_screenshot(index_shot, finished_shot)


def save_screenshot(index_png: bytes, job_png: bytes) -> None:
    """docs/job-page.png: the form and the list beside a finished job, at half size."""
    left, right = Image.open(io.BytesIO(index_png)), Image.open(io.BytesIO(job_png))
    gap = 24
    sheet = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), (245, 246, 248))  # the page background
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + gap, 0))
    sheet = sheet.resize((sheet.width // 2, sheet.height // 2), Image.LANCZOS)
    sheet = sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    sheet.save(SCREENSHOT, optimize=True)
