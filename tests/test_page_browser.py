"""The job page end to end in a real headless Chromium against the real service (`manage.py
run_service`: gunicorn, qcluster and the inference daemon on the tiny model).

A user logs in, uploads a picture, watches the progress bar move, plays the finished video
and downloads it through the session, then cancels a second job from its page. Meanwhile an
operator watches the job in the admin, whose live pages reload themselves, and opens /docs.
Every page answers with the Content-Security-Policy and the browser reports no violation of
it (a refused inline script or style, an image or media from elsewhere). The browser
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


# The browser's own reports of what the Content-Security-Policy refused, on every page of a context.
REPORT_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (e) =>
  window.reportViolation(`${e.violatedDirective} refused ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));"""


def watch_policy(context, violations: list[str]) -> None:
    """Collects into ``violations`` every CSP violation the pages of ``context`` report, by event
    and on the console."""
    context.expose_function("reportViolation", lambda text: violations.append(text))
    context.add_init_script(REPORT_VIOLATIONS)
    context.on("console", lambda message: "Content Security Policy" in message.text and violations.append(message.text))


def assert_policy(response) -> None:
    policy = response.header_value("content-security-policy") or ""
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy, policy


def open_live_admin(browser, base: str, request_id: str, violations: list[str]):
    """An operator's admin, logged in, on the job list and on the job's page while the job runs."""
    context = browser.new_context(viewport={"width": 1180, "height": 900})
    watch_policy(context, violations)
    page = context.new_page()
    assert_policy(page.goto(base + "/admin/login/?next=/admin/"))
    page.fill("#id_username", "grace")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(base + "/admin/")
    assert_policy(page.goto(base + "/admin/videojobs/videojob/"))
    job_page = context.new_page()
    job_page.goto(base + "/admin/videojobs/videojob/")
    job_page.get_by_role("link", name=request_id, exact=True).click()
    job_page.wait_for_url("**/change/")
    assert job_page.query_selector("#auto-refresh"), "the running job's admin page does not refresh itself"
    return context, [page, job_page]


def navigation_type(page) -> str | None:
    """How the page was last loaded: "navigate", or "reload" once its own script reloaded it."""
    from playwright.sync_api import Error

    try:
        return page.evaluate("() => performance.getEntriesByType('navigation')[0].type")
    except Error:  # the page is reloading
        return None


def assert_admin_reloaded(pages) -> None:
    """The admin pages, opened while the job ran, reloaded themselves (their script, a static file)."""
    deadline = time.monotonic() + 20
    waiting = list(pages)
    while waiting and time.monotonic() < deadline:
        pages[0].wait_for_timeout(250)
        waiting = [page for page in waiting if navigation_type(page) != "reload"]
    assert not waiting, f"the admin's live pages did not reload: {[page.url for page in waiting]}"


def assert_docs_render(context, base: str) -> None:
    """Swagger UI (/docs) starts from its static script and renders the schema."""
    page = context.new_page()
    assert_policy(page.goto(base + "/docs"))
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert page.query_selector("#operations-tag-video") or page.query_selector(".opblock"), "no operation shown"


def test_a_user_makes_watches_plays_downloads_and_cancels_jobs_in_chromium(tiny_ckpt, tmp_path, django_user_model):
    django_user_model.objects.create_user("ada", password=PASSWORD)
    django_user_model.objects.create_user("grace", password=PASSWORD, is_staff=True, is_superuser=True)
    violations: list[str] = []
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(tiny_ckpt, SERVER_HOST="127.0.0.1", SERVER_PORT=port, WEB_WORKERS=1, Q_WORKERS=1,
                      API_KEYS_REQUIRED="true", STATIC_ROOT=tmp_path / "static", VAR_DIR=tmp_path / "var")
    log = tmp_path / "service.log"
    image = picture(tmp_path / "hill.png")
    with running([sys.executable, "manage.py", "run_service"], env, log), chromium() as browser:
        wait_for(lambda: answers(base + "/health"), timeout=180, interval=0.5, what="/health 200", log=log)
        context = browser.new_context(viewport={"width": 1180, "height": 900})
        watch_policy(context, violations)
        page = context.new_page()
        # 1. The page asks for a login (keys are required here), then shows the form.
        assert_policy(page.goto(base + "/"))
        assert "/accounts/login/" in page.url
        page.fill("#id_username", "ada")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        # 2. Upload, submit, and watch the bar move while the daemon denoises.
        first = submit(page, base, image, "A sunny hill under a blue sky, clouds drifting by", frames=81, steps=100)
        # An operator opens the job list and the job in the admin while it runs.
        admin, admin_pages = open_live_admin(browser, base, first, violations)
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
        # The admin's pages reloaded themselves while the job ran; the API's docs render.
        assert_admin_reloaded(admin_pages)
        assert_docs_render(admin, base)
        admin.close()
        # 4. A second, long job is cancelled from its page.
        submit(page, base, image, "The same hill at night, stars turning slowly overhead", frames=81, steps=100)
        # Running (its upload prepared, claimed): the cancel stops the daemon, and the job keeps its thumbnail.
        page.wait_for_selector("#job-status[data-status='InProgress']", timeout=90_000)
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
    assert violations == [], violations
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
