"""An INT8 daemon end to end on the CPU (tiny model, real processes, real Postgres): the job's
result, the worker row and /health name the quantization that ran and the bytes each rank holds;
an fp8 daemon on the CPU refuses to start with one line naming the device requirement."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.daemon_support import daemon_argv, finished, running, service_env, wait_for
from tests.test_daemon_e2e import ready_job  # noqa: F401 - the fixture
from videojobs import selectors
from videojobs.models import InferenceWorker, JobStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def test_an_int8_daemon_runs_a_job_and_reports_its_quantization_and_weights(ready_job, tiny_ckpt, tmp_path, api):  # noqa: F811
    job = ready_job(infer_steps=4)
    log = tmp_path / "daemon.log"
    with running(daemon_argv(nproc=2), service_env(tiny_ckpt, DIT_QUANT="int8", T5_QUANT="int8", CFG_SIZE=2), log):
        done = wait_for(lambda: finished(job.pk), timeout=240, what="the int8 job", log=log)
        health = api.get("/health").json()
    assert done.status == JobStatus.SUCCEED, done.reason
    # The job's result names what ran.
    acceleration = selectors.status_document(job=done)["results"]["acceleration"]
    assert acceleration["quantization"]["dit"] == "int8" and acceleration["quantization"]["t5"] == "int8"
    assert acceleration["quantization"]["attention"] == {"backend": "native", "quantized": False}
    # The worker row: every rank's weight bytes per component, int8 on both ranks (CFG parallel
    # holds the whole model on each); no peak on the CPU.
    worker = InferenceWorker.objects.get()
    assert worker.quantization["dit"] == "int8"
    ranks = worker.memory["weights_bytes"]
    assert len(ranks) == 2 and ranks[0] == ranks[1]
    assert set(ranks[0]) == {"transformer", "text_encoder", "image_encoder", "vae"}
    assert "last_job_peak_bytes" not in worker.memory
    # /health shows the same.
    [shown] = health["workers"]["workers"]
    assert shown["quantization"] == worker.quantization and shown["memory"] == worker.memory


def test_an_fp8_daemon_on_the_cpu_refuses_to_start_naming_the_requirement(tiny_ckpt):  # noqa: F811
    result = subprocess.run(daemon_argv(), cwd=ROOT, env=service_env(tiny_ckpt, DIT_QUANT="fp8"), capture_output=True,
                            text=True, timeout=180)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("CommandError")]
    assert len(errors) == 1 and "DIT_QUANT=fp8 needs a CUDA GPU of compute capability 8.9" in errors[0], \
        result.stderr[-2000:]
    assert "Traceback" not in result.stderr
