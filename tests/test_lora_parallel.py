"""LoRA adapters on 2 gloo ranks: Ulysses + FSDP2 (sharded adapters), and CFG parallel with T5 on the CPU and
the VAE split; each against the same deltas merged offline, no leak between jobs, the bytes each rank holds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lora_support import merged_checkpoint, random_deltas, write_lora

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCALE = 0.8


TOPOLOGIES = {"ulysses_fsdp": "ULYSSES_SIZE=2,DIT_FSDP=1", "cfg_t5cpu_vae": "CFG_SIZE=2,T5_CPU=1,VAE_PARALLEL=1"}


@pytest.fixture(scope="module", params=list(TOPOLOGIES))
def report(request, tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    work = tmp_path_factory.mktemp("lora-parallel")
    deltas = random_deltas(tiny_ckpt, seed=3)
    write_lora(work / "loras", "style", deltas, "wan")
    merged = merged_checkpoint(tiny_ckpt, work / "merged", deltas, SCALE)
    out = work / "report.json"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(ROOT / "tests" / "lora_checks.py"), str(tiny_ckpt), str(merged), str(work / "loras"), str(SCALE), str(out),
            *TOPOLOGIES[request.param].split(",")]
    log = work / "log.txt"
    with open(log, "wb") as handle:
        code = subprocess.run(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=handle,
                              stderr=subprocess.STDOUT, timeout=900).returncode
    assert code == 0, log.read_text(errors="replace")[-5000:]
    result = json.loads(out.read_text())
    result["full_bytes"] = 4 * sum(down.numel() + up.numel() for down, up, _ in deltas.modules.values())
    result["case"] = request.param
    return result


def test_each_case_runs_its_topology(report: dict) -> None:
    topology = report["topology"]
    if report["case"] == "ulysses_fsdp":
        assert topology["ulysses_size"] == 2 and topology["dit_fsdp"] is True
    else:
        assert topology["cfg_size"] == 2 and topology["t5_cpu"] and topology["vae_parallel"]


def test_a_lora_on_sharded_ranks_equals_its_deltas_merged_offline(report: dict) -> None:
    # Split matrix products may round the last float bit differently (as in test_parallel_parity).
    assert report["lora_changes_video"]
    assert report["lora_vs_merged"]["max"] <= 1 and report["lora_vs_merged"]["fraction"] <= 1e-3


def test_a_job_without_loras_equals_the_daemon_without_adapters_and_nothing_leaks(report: dict) -> None:
    assert report["no_lora_equal_plain"]
    assert report["repeat_equal"]


def test_sharded_ranks_hold_half_of_the_adapter_and_others_all_of_it(report: dict) -> None:
    first, second = report["memory_bytes_per_rank"]
    if report["case"] == "ulysses_fsdp":
        assert first + second == report["full_bytes"]
        assert first < report["full_bytes"] and second < report["full_bytes"]
    else:
        assert first == second == report["full_bytes"]
