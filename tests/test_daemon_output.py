"""The daemon and its output folder: fail early, never leak a path, readable videos (issue 8, item 6)."""
from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from inference.video import output_problem, write_mp4
from tests.daemon_support import ROOT, daemon_argv, finished, running, service_env, wait_for
from tests.test_daemon_e2e import ready_job  # noqa: F401
from videojobs.models import JobStatus
from videojobs.services import redact_paths


def test_a_folder_that_cannot_be_created_is_unwritable(tmp_path):
    (tmp_path / "a-file").write_text("x")
    code, reason = output_problem(tmp_path / "a-file" / "videos", min_free_bytes=0)
    assert code == "OUTPUT_UNWRITABLE" and str(tmp_path) not in reason


def test_too_little_free_space_is_disk_full(tmp_path):
    code, reason = output_problem(tmp_path, min_free_bytes=2**62)
    assert code == "DISK_FULL" and "MIN_FREE_DISK_MB" in reason and str(tmp_path) not in reason
    assert output_problem(tmp_path, min_free_bytes=0) is None


def test_videos_are_readable_by_the_web_server(tmp_path):
    info = write_mp4(np.zeros((5, 16, 16, 3), dtype=np.uint8), tmp_path / "v.mp4", fps=16)
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o644


def test_job_reasons_lose_server_paths():
    reason = "rank 0: PermissionError: [Errno 13] Permission denied: '/srv/videogen/generated_videos/x.mp4'"
    assert redact_paths(reason) == "rank 0: PermissionError: [Errno 13] Permission denied: '<path>'"
    assert redact_paths("image_url returned HTTP 404 for https://example.com/a/b.png") == (
        "image_url returned HTTP 404 for https://example.com/a/b.png")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_daemon_refuses_to_start_without_a_writable_output_folder(tiny_ckpt, tmp_path):
    (tmp_path / "a-file").write_text("x")
    env = service_env(tiny_ckpt, OUTPUT_DIR=tmp_path / "a-file" / "videos")
    result = subprocess.run(daemon_argv(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "OUTPUT_DIR" in last and ("not writable" in last or "not a writable folder" in last), last


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_full_or_unwritable_output_fails_jobs_at_once_and_the_next_job_runs(ready_job, settings, tiny_ckpt, tmp_path):  # noqa: F811
    full = ready_job(infer_steps=100, num_frames=81)
    log = tmp_path / "daemon.log"
    output = Path(settings.OUTPUT_DIR)
    with running(daemon_argv(), service_env(tiny_ckpt, MIN_FREE_DISK_MB=10**9), log):
        failed = wait_for(lambda: finished(full.pk), timeout=60, what="DISK_FULL", log=log)
    assert (failed.status, failed.error_code) == (JobStatus.FAILED, "DISK_FULL")
    # Failed before any inference: no step, no phase timed.
    assert failed.progress_step == 0 and not failed.timings and str(output) not in failed.reason
    # The folder turns into a file while the daemon waits: the next job fails, the one after runs.
    with running(daemon_argv(), service_env(tiny_ckpt), log):
        wait_for(lambda: "ready on" in log.read_text(), timeout=120, what="the daemon to be ready", log=log)
        shutil.rmtree(output)
        output.write_text("not a folder")
        unwritable = ready_job()
        gone = wait_for(lambda: finished(unwritable.pk), timeout=60, what="OUTPUT_UNWRITABLE", log=log)
        output.unlink()
        good = ready_job()
        done = wait_for(lambda: finished(good.pk), timeout=120, what="the good job", log=log)
    assert (gone.error_code, done.status) == ("OUTPUT_UNWRITABLE", JobStatus.SUCCEED)
    assert str(output) not in gone.reason
