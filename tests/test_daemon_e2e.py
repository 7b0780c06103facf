"""The inference daemon end to end on the CPU with the tiny model: real processes, real Postgres."""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from inference.video import probe_mp4
from tests.conftest import png_bytes
from tests.daemon_support import SMALL_JOB as SMALL
from tests.daemon_support import daemon_argv, finished, job_state, ready_small_job, running, service_env, wait_for
from videojobs import selectors, services
from videojobs.models import InferenceWorker, JobStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def ready_job(settings):
    """Submit a job through the service and prepare its input as the qcluster task would."""
    settings.MAX_CONCURRENT_TASKS = 50
    return ready_small_job


def http_json(url: str, payload: dict | None = None) -> tuple[int, dict]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_submitted_job_runs_end_to_end_and_the_video_is_served(live_server, settings, tiny_ckpt, tmp_path):  # noqa: F811
    # The whole stack: HTTP submit -> qcluster prepare_input (fetching from the live server's
    # own origin) -> daemon -> Succeed -> GET the mp4 over HTTP and decode it.
    settings.IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    Path(settings.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    image = tmp_path / "static-image.png"
    image.write_bytes(png_bytes(120, 90))
    env = service_env(tiny_ckpt)
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    import functools
    import threading

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    image_server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=image_server.serve_forever, daemon=True).start()
    image_url = f"http://127.0.0.1:{image_server.server_address[1]}/static-image.png"
    qlog, dlog = tmp_path / "qcluster.log", tmp_path / "daemon.log"
    try:
        with running([sys.executable, "manage.py", "qcluster"], env, qlog), running(daemon_argv(), env, dlog):
            status, body = http_json(
                f"{live_server.url}/video/submit",
                {"prompt": "a red square drifting to the left", "image_url": image_url, **{**SMALL, "num_frames": 29},
                 "use_attentioncache": True, "start_step": 12, "attentioncache_interval": 4, "end_step": 37},
            )
            assert status == 202, body
            request_id = body["requestId"]
            status, body = http_json(
                f"{live_server.url}/video/submit",
                {"prompt": "a red square drifting to the left", "image_url": image_url, **SMALL,
                 "cache_method": "dbcache", "cache_threshold": 0.5},
            )
            assert status == 202, body
            adaptive_id = body["requestId"]
            steps_seen: list[int] = []

            def done():
                job = job_state(_pk(request_id))
                if job.phase == "denoising" and (not steps_seen or steps_seen[-1] != job.progress_step):
                    steps_seen.append(job.progress_step)
                return job.status in ("Succeed", "Failed", "Cancelled")

            wait_for(done, timeout=240, interval=0.01, what="the job to finish", log=dlog)
            status, doc = http_json(f"{live_server.url}/video/status", {"requestId": request_id})
            assert doc["status"] == "Succeed", (doc, dlog.read_text()[-3000:])
            assert doc["progress"] == 1.0
            results = doc["results"]
            assert results["frames"] == 29 and results["fps"] == 16 and results["resolution"] == "64*64"
            assert set(results["timings"]) >= {"encoding", "denoising", "decoding", "saving"}
            # The attention cache ran (12/4/37 over 20 steps reuses 6 steps per pass) and says so.
            assert results["acceleration"]["cache"]["reused_steps_per_pass"] == 6
            assert results["acceleration"]["attention_backend"] == "native"
            # Progress rose step by step: strictly increasing, several distinct steps observed.
            assert steps_seen == sorted(set(steps_seen)) and len(steps_seen) >= 3, steps_seen
            # The video over HTTP, decoded.
            video = tmp_path / "downloaded.mp4"
            with urllib.request.urlopen(f"{live_server.url}{results['video_url']}", timeout=10) as response:
                assert response.headers["Content-Type"] == "video/mp4"
                video.write_bytes(response.read())
            info = probe_mp4(video)
            assert (info.frames, info.width, info.height, info.fps) == (29, 64, 64, 16)
            # The adaptive cache's job, submitted right after, reports the steps it reused.
            wait_for(lambda: job_state(_pk(adaptive_id)).status == "Succeed", timeout=120, what="the dbcache job", log=dlog)
            cache = http_json(f"{live_server.url}/video/status", {"requestId": adaptive_id})[1]["results"]["acceleration"]["cache"]
            assert cache["method"] == "dbcache" and cache["cached_steps"]["cond"] > 0
            # The daemon registered itself and /health is ready.
            assert InferenceWorker.objects.filter(state__in=["idle", "busy"]).exists()
            assert http_json(f"{live_server.url}/health")[0] == 200
    finally:
        image_server.shutdown()


def _pk(request_id: str) -> int:
    from videojobs.models import VideoJob

    return VideoJob.objects.values_list("pk", flat=True).get(request_id=request_id)


def test_cancel_of_running_job_stops_within_one_step_and_next_job_succeeds(ready_job, settings, tiny_ckpt, tmp_path):  # noqa: F811
    long_job = ready_job(infer_steps=100)
    next_job = ready_job()
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt), log):
        wait_for(lambda: job_state(long_job.pk).progress_step >= 3, timeout=120, what="step 3", log=log)
        step_at_cancel = job_state(long_job.pk).progress_step
        services.request_cancel(request_id=long_job.request_id)
        stopped = wait_for(lambda: finished(long_job.pk), timeout=60, what="the cancel", log=log)
        # One step may be in flight when the cancel lands, and one may finish between our
        # read of the step and the request: never more.
        assert stopped.status == JobStatus.CANCELLED
        assert stopped.progress_step <= step_at_cancel + 2
        assert not (Path(settings.OUTPUT_DIR) / f"{long_job.request_id}.mp4").exists()
        after = wait_for(lambda: finished(next_job.pk), timeout=120, what="the next job", log=log)
        assert after.status == JobStatus.SUCCEED, after.reason


def test_a_cached_job_reports_what_it_reused(ready_job, tiny_ckpt, tmp_path):  # noqa: F811
    # The original's defaults (12/4/37) over 20 steps: stores at 12 and 16, reuses 13-15 and 17-19.
    job = ready_job(use_attentioncache=True, cache_method="attention", start_step=12, attentioncache_interval=4,
                    end_step=37, infer_steps=20)
    adaptive = ready_job(cache_method="dbcache", cache_threshold=0.5, infer_steps=20)
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt), log):
        done = wait_for(lambda: finished(job.pk), timeout=120, what="the cached job", log=log)
        adapted = wait_for(lambda: finished(adaptive.pk), timeout=120, what="the dbcache job", log=log)
    assert done.status == JobStatus.SUCCEED, done.reason
    cache = selectors.status_document(job=done)["results"]["acceleration"]["cache"]
    assert (cache["method"], cache["end_step"], cache["reused_steps_per_pass"]) == ("attention", 19, 6)
    blocks = 2  # the tiny DiT
    assert cache["reused"] == {"cond": 6 * blocks, "uncond": 6 * blocks}
    assert adapted.status == JobStatus.SUCCEED, adapted.reason
    cache = selectors.status_document(job=adapted)["results"]["acceleration"]["cache"]
    assert cache["method"] == "dbcache" and cache["cached_steps"]["cond"] > 0 and cache["cached_steps"]["uncond"] > 0


def test_the_status_reports_the_dit_passes_each_sampler_ran(ready_job, tiny_ckpt, tmp_path):  # noqa: F811
    cfg = ready_job()  # 20 steps with guidance 3: two passes each
    distilled = ready_job(sample_solver="distill", infer_steps=4)  # guidance 3 asked: one pass each, a warning
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt), log):
        cfg_done = wait_for(lambda: finished(cfg.pk), timeout=120, what="the CFG job", log=log)
        distilled_done = wait_for(lambda: finished(distilled.pk), timeout=120, what="the distilled job", log=log)
    assert cfg_done.status == distilled_done.status == JobStatus.SUCCEED, (cfg_done.reason, distilled_done.reason)
    cfg_results = selectors.status_document(job=cfg_done)["results"]
    distilled_results = selectors.status_document(job=distilled_done)["results"]
    assert (cfg_results["dit_forwards"], distilled_results["dit_forwards"]) == (40, 4)
    assert any("guidance_scale 3 was not applied" in w for w in distilled_results["warnings"])
    assert not any("guidance_scale" in w for w in cfg_results["warnings"])


def test_cancel_during_the_vae_decode_stops_after_one_chunk(ready_job, settings, tiny_ckpt, tmp_path):  # noqa: F811
    # 201 frames: 51 latent frames to decode, one chunk each; the cancel lands during the first ones.
    job = ready_job(image_size="96*64", num_frames=201, infer_steps=20)
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt), log):
        wait_for(lambda: job_state(job.pk).phase == "decoding", timeout=180, interval=0.005, what="decoding", log=log)
        services.request_cancel(request_id=job.request_id)
        stopped = wait_for(lambda: finished(job.pk), timeout=60, what="the cancel", log=log)
    assert stopped.status == JobStatus.CANCELLED
    where = re.search(rf"rank 0 stopped job {job.request_id} \(CANCEL\) at decoding chunk (\d+)/51", log.read_text())
    assert where is not None, log.read_text()[-2000:]
    assert int(where.group(1)) < 51


def test_task_timeout_stops_the_job_as_failed_timeout(ready_job, tiny_ckpt, tmp_path):  # noqa: F811
    # 81 frames x 100 steps takes well over a second even on a fast CPU.
    job = ready_job(infer_steps=100, num_frames=81)
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt, TASK_TIMEOUT=1), log):
        ended = wait_for(lambda: finished(job.pk), timeout=120, what="the timeout", log=log)
    assert ended.status == JobStatus.FAILED
    assert ended.error_code == "TIMEOUT"
    assert "TASK_TIMEOUT" in ended.reason
    # Stopped at the first synchronisation point past the deadline: a phase boundary, a VAE
    # chunk of the condition encode or a step, long before the last step.
    assert ended.progress_step < 100
    assert f"rank 0 stopped job {job.request_id} (TIMEOUT) at " in log.read_text()


def test_job_error_fails_the_job_with_a_reason_and_the_daemon_goes_on(ready_job, settings, tiny_ckpt, tmp_path):  # noqa: F811
    # 26 frames slips past no API check here (the row is written directly): the model refuses it.
    broken = ready_job(num_frames=26)
    lost_input = ready_job()
    (Path(settings.MEDIA_ROOT) / job_state(lost_input.pk).input_image).unlink()
    good = ready_job()
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt), log):
        failed = wait_for(lambda: finished(broken.pk), timeout=120, what="the broken job", log=log)
        missing = wait_for(lambda: finished(lost_input.pk), timeout=120, what="the job without input", log=log)
        ok = wait_for(lambda: finished(good.pk), timeout=120, what="the good job", log=log)
    assert failed.status == JobStatus.FAILED and failed.error_code == "INFERENCE_ERROR"
    assert failed.reason.startswith("rank 0: ValueError") and "num_frames" in failed.reason
    assert missing.status == JobStatus.FAILED and missing.error_code == "INPUT_MISSING"
    assert "/" not in missing.reason  # no server path leaks into the reason
    assert ok.status == JobStatus.SUCCEED


def test_sigkill_mid_job_is_rescued_and_succeeds_after_restart_with_one_output(ready_job, settings, tiny_ckpt, tmp_path):  # noqa: F811
    job = ready_job(infer_steps=60)
    env = service_env(tiny_ckpt, LEASE_SECONDS=3)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with running(daemon_argv(), env, first_log) as daemon:
        wait_for(lambda: job_state(job.pk).progress_step >= 2, timeout=120, what="step 2", log=first_log)
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
    assert job_state(job.pk).status == JobStatus.IN_PROGRESS
    # The lease lapses; the sweep (a qcluster schedule in production) puts the job back.
    time.sleep(3.5)
    assert services.rescue_expired_leases().requeued == 1
    assert job_state(job.pk).status == JobStatus.IN_QUEUE
    with running(daemon_argv(), env, second_log):
        ended = wait_for(lambda: finished(job.pk), timeout=180, what="the rescued job", log=second_log)
    assert ended.status == JobStatus.SUCCEED, ended.reason
    assert ended.attempt == 2
    outputs = [p.name for p in Path(settings.OUTPUT_DIR).iterdir() if job.request_id in p.name]
    assert outputs == [f"{job.request_id}.mp4"]


def test_two_rank_torchrun_daemon_matches_the_single_rank_video(ready_job, settings, tiny_ckpt, tmp_path):  # noqa: F811
    single = ready_job(seed=11)
    log = tmp_path / "single.log"
    with running(daemon_argv(max_jobs=1), service_env(tiny_ckpt), log) as daemon:
        daemon.wait(timeout=180)
    assert job_state(single.pk).status == JobStatus.SUCCEED, log.read_text()[-3000:]
    double = ready_job(seed=11)
    log2 = tmp_path / "two-rank.log"
    with running(daemon_argv(nproc=2, max_jobs=1), service_env(tiny_ckpt), log2) as daemon:
        assert daemon.wait(timeout=240) == 0, log2.read_text()[-3000:]
    ended = job_state(double.pk)
    assert ended.status == JobStatus.SUCCEED, ended.reason
    assert ended.result["topology"]["world_size"] == 2
    import imageio.v2 as imageio

    one = np.stack(imageio.mimread(Path(settings.OUTPUT_DIR) / f"{single.request_id}.mp4")).astype(np.int16)
    two = np.stack(imageio.mimread(Path(settings.OUTPUT_DIR) / f"{double.request_id}.mp4")).astype(np.int16)
    assert one.shape == two.shape
    # Same seed, same machine: the same video (up to float reduction order across thread counts).
    assert np.abs(one - two).mean() < 1.0


def test_missing_checkpoint_fails_at_start_with_one_line_naming_the_part(tmp_path):
    import subprocess

    ckpt = tmp_path / "incomplete"
    ckpt.mkdir()
    (ckpt / "model_index.json").write_text('{"_class_name": "WanImageToVideoPipeline"}')
    result = subprocess.run(
        daemon_argv(), cwd=Path(__file__).resolve().parent.parent, env=service_env(ckpt),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("CommandError")]
    assert len(errors) == 1 and "incomplete" in errors[0] and "transformer" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_death_of_a_rank_mid_job_exits_the_daemon_non_zero_and_the_job_is_rescued(ready_job, tiny_ckpt, tmp_path):  # noqa: F811
    import psutil

    job = ready_job(infer_steps=100, num_frames=49)
    log = tmp_path / "two-rank.log"
    with running(daemon_argv(nproc=2), service_env(tiny_ckpt, LEASE_SECONDS=2), log) as daemon:
        wait_for(lambda: job_state(job.pk).progress_step >= 2, timeout=180, what="step 2", log=log)
        ranks = [p for p in psutil.Process(daemon.pid).children(recursive=True) if "run_inference_daemon" in " ".join(p.cmdline())]
        follower = next(p for p in ranks if p.environ().get("RANK") == "1")
        follower.kill()
        assert daemon.wait(timeout=120) != 0
    assert job_state(job.pk).status == JobStatus.IN_PROGRESS
    time.sleep(2.5)
    assert services.rescue_expired_leases().requeued == 1
    assert job_state(job.pk).status == JobStatus.IN_QUEUE


def test_sigterm_drains_the_running_job_then_exits_cleanly(ready_job, tiny_ckpt, tmp_path):  # noqa: F811
    running_job = ready_job(infer_steps=60)
    waiting_job = ready_job()
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt), log) as daemon:
        wait_for(lambda: job_state(running_job.pk).progress_step >= 2, timeout=120, what="step 2", log=log)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=120) == 0
    assert job_state(running_job.pk).status == JobStatus.SUCCEED
    assert job_state(waiting_job.pk).status == JobStatus.IN_QUEUE
    assert InferenceWorker.objects.get().state == "stopped"


def test_second_stop_signal_gives_the_running_job_back_to_the_queue(ready_job, settings, tiny_ckpt, tmp_path):  # noqa: F811
    job = ready_job(infer_steps=100, num_frames=49)
    log = tmp_path / "daemon.log"
    with running(daemon_argv(), service_env(tiny_ckpt), log) as daemon:
        wait_for(lambda: job_state(job.pk).progress_step >= 2, timeout=120, what="step 2", log=log)
        daemon.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        daemon.send_signal(signal.SIGINT)
        assert daemon.wait(timeout=120) == 0
    back = job_state(job.pk)
    assert back.status == JobStatus.IN_QUEUE
    # The interrupted attempt is not charged: all of JOB_MAX_ATTEMPTS are still ahead.
    assert back.max_attempts - back.attempt == settings.JOB_MAX_ATTEMPTS


def test_two_rank_daemon_idles_longer_than_the_collective_timeout_then_runs_a_job(ready_job, tiny_ckpt, tmp_path):  # noqa: F811
    # The idle tick keeps every wait on the control channel far shorter than the timeout.
    log = tmp_path / "two-rank.log"
    env = service_env(tiny_ckpt, DIST_TIMEOUT_SECONDS=10, DAEMON_IDLE_TICK_SECONDS=1)
    with running(daemon_argv(nproc=2), env, log) as daemon:
        wait_for(lambda: InferenceWorker.objects.filter(state="idle").exists(), timeout=120, what="idle", log=log)
        time.sleep(14)
        assert daemon.poll() is None, log.read_text()[-3000:]
        job = ready_job()
        ended = wait_for(lambda: finished(job.pk), timeout=120, what="the job", log=log)
    assert ended.status == JobStatus.SUCCEED, ended.reason
    assert ended.result["topology"]["world_size"] == 2


def test_two_daemons_on_one_database_share_the_queue_without_double_claims(ready_job, settings, tiny_ckpt, tmp_path):  # noqa: F811
    jobs = [ready_job(infer_steps=30) for _ in range(4)]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with running(daemon_argv(), service_env(tiny_ckpt, WORKER_NAME="daemon-a"), logs[0]), running(
        daemon_argv(), service_env(tiny_ckpt, WORKER_NAME="daemon-b"), logs[1]
    ):
        ended = [wait_for(lambda pk=job.pk: finished(pk), timeout=240, what="all jobs", log=logs[0]) for job in jobs]
    assert [job.status for job in ended] == [JobStatus.SUCCEED] * 4
    assert all(job.attempt == 1 for job in ended)
    assert {job.worker for job in ended} <= {"daemon-a", "daemon-b"}
    done = dict(InferenceWorker.objects.values_list("name", "jobs_done"))
    assert sum(done.values()) == 4
    assert len(list(Path(settings.OUTPUT_DIR).glob("*.mp4"))) == 4
