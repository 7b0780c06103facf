"""Whole jobs on 2 and 4 gloo ranks against the single-process frames, mode by mode.

Every case runs the same request and seed through ``inference.trial`` (real torchrun,
real process groups, the tiny checkpoint); the single-process frames come from the same
runner with one rank. The modes whose ranks run the very same computation as one process
(CFG parallel, T5 on the CPU) must give identical frames. Where ranks compute a part of a
matrix product (Ulysses, ring, FSDP-gathered weights, VAE strips), CPU BLAS chooses its
kernel by shape and memory alignment and may round the last float bit differently; those
frames must stay within 1/255 on at most 0.1% of the values. tests/test_parallel_components.py
checks underneath that the maths itself is the same.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# name: (switches, guidance, exact)
CASES_2 = {
    "ulysses2": ("ULYSSES_SIZE=2", 5.0, False),
    "ring2": ("RING_SIZE=2,ULYSSES_SIZE=1", 5.0, False),
    "cfg2": ("CFG_SIZE=2", 5.0, True),
    "cfg2_no_guidance": ("CFG_SIZE=2", 1.0, True),
    "cfg2_no_guidance_fsdp": ("CFG_SIZE=2,DIT_FSDP=1", 1.0, False),
    "dit_fsdp": ("CFG_SIZE=2,DIT_FSDP=1", 5.0, False),
    "dit_fsdp_ulysses2": ("ULYSSES_SIZE=2,DIT_FSDP=1", 5.0, False),
    "t5_fsdp": ("CFG_SIZE=2,T5_FSDP=1", 5.0, False),
    "t5_cpu": ("CFG_SIZE=2,T5_CPU=1", 5.0, True),
    "vae_parallel": ("CFG_SIZE=2,VAE_PARALLEL=1", 5.0, False),
}
CASES_4 = {
    "ulysses4": ("ULYSSES_SIZE=4", 5.0, False),
    "ulysses2_ring2": ("ULYSSES_SIZE=2,RING_SIZE=2", 5.0, False),
    "ulysses2_cfg2": ("ULYSSES_SIZE=2,CFG_SIZE=2", 5.0, False),
    "vae_parallel4": ("ULYSSES_SIZE=4,VAE_PARALLEL=1", 5.0, False),
    "all_switches": ("ULYSSES_SIZE=2,CFG_SIZE=2,DIT_FSDP=1,T5_FSDP=1,VAE_PARALLEL=1", 5.0, False),
    "all_switches_t5_cpu": ("ULYSSES_SIZE=2,CFG_SIZE=2,DIT_FSDP=1,T5_CPU=1,VAE_PARALLEL=1", 5.0, False),
}


# The step caches under the parallel modes (3 steps: the attention cache stores at 0 and 2 and
# reuses step 1), against the single process with the same cache.
ATTENTION_CACHE = ["--cache-method", "attention", "--cache-start", "0", "--cache-interval", "2", "--cache-end", "2"]
CACHE_CASES_4 = {
    "attention_cache_ulysses2_cfg2": ("ULYSSES_SIZE=2,CFG_SIZE=2", 5.0, False),
    "attention_cache_ulysses2_ring2": ("ULYSSES_SIZE=2,RING_SIZE=2", 5.0, False),
    "attention_cache_all_switches": ("ULYSSES_SIZE=2,CFG_SIZE=2,DIT_FSDP=1,T5_FSDP=1,VAE_PARALLEL=1", 5.0, False),
}
# The adaptive cache over 8 steps (warm-up 2, then it may reuse) at a loose threshold.
DBCACHE = ["--cache-method", "dbcache", "--cache-threshold", "0.5", "--steps", "8"]
DBCACHE_CASES_4 = {
    "dbcache_ulysses2_cfg2": ("ULYSSES_SIZE=2,CFG_SIZE=2", 5.0, False),
    "dbcache_ulysses4": ("ULYSSES_SIZE=4", 5.0, False),
    "dbcache_all_switches": ("ULYSSES_SIZE=2,CFG_SIZE=2,DIT_FSDP=1,T5_FSDP=1,VAE_PARALLEL=1", 5.0, False),
}


def _trial(ckpt: Path, out: Path, nproc: int, cases: dict[str, tuple[str, float, bool]], guidance: float,
           extra: list[str] | None = None) -> None:
    selected = [f"{name}:{switches}" for name, (switches, g, _) in cases.items() if g == guidance]
    if not selected:
        return
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "inference.trial", "--ckpt", str(ckpt), "--out", str(out), "--guidance", str(guidance),
            "--count-bytes", *(extra or [])]
    for case in selected:
        argv += ["--case", case]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = out / f"trial-{nproc}-{guidance}.log"
    with open(log, "wb") as handle:
        code = subprocess.run(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=900).returncode
    assert code == 0, f"torchrun exited {code}:\n{log.read_text(errors='replace')[-5000:]}"


@pytest.fixture(scope="module")
def frames(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("parity")
    for guidance in (5.0, 1.0):
        _trial(tiny_ckpt, out, 1, {f"single_{guidance}": ("", guidance, True)}, guidance)
        _trial(tiny_ckpt, out, 2, CASES_2, guidance)
        _trial(tiny_ckpt, out, 4, CASES_4, guidance)
    _trial(tiny_ckpt, out, 1, {"single_attention_cache": ("", 5.0, True)}, 5.0, ATTENTION_CACHE)
    _trial(tiny_ckpt, out, 4, CACHE_CASES_4, 5.0, ATTENTION_CACHE)
    _trial(tiny_ckpt, out, 1, {"single_dbcache": ("", 5.0, True)}, 5.0, DBCACHE)
    _trial(tiny_ckpt, out, 4, DBCACHE_CASES_4, 5.0, DBCACHE)
    return out


def _compare(out: Path, name: str, guidance: float, exact: bool, single_name: str | None = None) -> None:
    single = np.load(out / f"{single_name or f'single_{guidance}'}.npy")
    parallel = np.load(out / f"{name}.npy")
    assert parallel.shape == (9, 80, 64, 3)
    if exact:
        np.testing.assert_array_equal(parallel, single)
        return
    assert parallel.shape == single.shape
    difference = np.abs(parallel.astype(np.int16) - single.astype(np.int16))
    assert difference.max() <= 1, f"{name}: a pixel value differs by {difference.max()}"
    assert (difference > 0).mean() <= 1e-3, f"{name}: {(difference > 0).mean():.2%} of the values differ"


@pytest.mark.parametrize("name", list(CASES_2))
def test_two_ranks_equal_the_single_process_frames(frames: Path, name: str) -> None:
    _, guidance, exact = CASES_2[name]
    _compare(frames, name, guidance, exact)


@pytest.mark.parametrize("name", list(CASES_4))
def test_four_ranks_equal_the_single_process_frames(frames: Path, name: str) -> None:
    _, guidance, exact = CASES_4[name]
    _compare(frames, name, guidance, exact)


def test_sharded_ranks_hold_a_fraction_of_the_dit(frames: Path) -> None:
    import json

    report = json.loads((frames / "all_switches.json").read_text())
    single = json.loads((frames / "single_5.0.json").read_text())
    full = single["ranks"][0]["held_bytes"]["transformer"]
    for rank in report["ranks"]:
        # FSDP over 4 ranks: a quarter of each sharded tensor's rows (rounded up).
        assert rank["held_bytes"]["transformer"] < 0.3 * full
        assert rank["held_bytes"]["text_encoder"] < 0.3 * single["ranks"][0]["held_bytes"]["text_encoder"]


def test_t5_on_the_cpu_lives_on_rank_zero_only(frames: Path) -> None:
    import json

    report = json.loads((frames / "all_switches_t5_cpu.json").read_text())
    held = [rank["held_bytes"]["text_encoder"] for rank in report["ranks"]]
    assert held[0] > 0 and held[1:] == [0, 0, 0]


@pytest.mark.parametrize("name", list(CASES_2) + list(CASES_4))
def test_every_rank_sends_what_the_traffic_model_says(frames: Path, tiny_ckpt: Path, name: str) -> None:  # noqa: F811
    # The formula that projects the real model's communication (bench/parallel_traffic.py) must
    # account for every byte the tiny model's ranks actually sent while denoising.
    import json

    import torch
    from diffusers import WanTransformer3DModel

    from inference.parallel.topology import Topology
    from inference.parallel.traffic import fsdp_shard_bytes, step_traffic

    report = json.loads((frames / f"{name}.json").read_text())
    topology = Topology(**report["topology"])
    with torch.device("meta"):
        dit = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(tiny_ckpt / "transformer"))
    request = report["request"]
    tokens = ((request["frames"] - 1) // 4 + 1) * (request["height"] // 16) * (request["width"] // 16)
    expected = step_traffic(topology=topology, config=dit.config, tokens=tokens, activation_bytes=4,
                            guidance=request["guidance"] > 1, fsdp_shard=fsdp_shard_bytes(dit, topology.world_size))
    for rank in report["ranks"]:
        assert rank["traffic"]["per_step"] == pytest.approx(expected), (rank["rank"], rank["traffic"]["per_step"])


@pytest.mark.parametrize("name", list(CACHE_CASES_4))
def test_the_attention_cache_under_parallel_modes_equals_its_single_process_run(frames: Path, name: str) -> None:
    import json

    _, guidance, exact = CACHE_CASES_4[name]
    _compare(frames, name, guidance, exact, single_name="single_attention_cache")
    # Each CFG half reused step 1 of its own pass, as the single process did for both; the job's
    # report (on every rank) unites the halves.
    single = json.loads((frames / "single_attention_cache.json").read_text())["ranks"][0]["cache"]
    assert single["reused"] == {"cond": 2, "uncond": 2}  # step 1 of 3, both blocks, each pass
    for rank in json.loads((frames / f"{name}.json").read_text())["ranks"]:
        assert rank["cache"]["reused"] == {"cond": 2, "uncond": 2} and rank["cache"]["reused_steps_per_pass"] == 1


def _cache_report(frames: Path, name: str) -> dict:
    import json

    return json.loads((frames / f"{name}.json").read_text())["acceleration"]["cache"]


@pytest.mark.parametrize("name", ["dbcache_ulysses2_cfg2", "dbcache_ulysses4"])
def test_the_adaptive_cache_under_parallel_modes_equals_its_single_process_run(frames: Path, name: str) -> None:
    # Each pass decides over its own ranks as one process decides for it: the same steps are
    # reused, and the frames are the single process's (up to the last float bit).
    single = _cache_report(frames, "single_dbcache")
    assert single["cached_steps"]["cond"] > 0
    assert _cache_report(frames, name)["cached_step_numbers"] == single["cached_step_numbers"]
    _compare(frames, name, 5.0, False, single_name="single_dbcache")


def test_the_adaptive_cache_with_fsdp_decides_jointly_and_does_not_hang(frames: Path) -> None:
    # Under DIT_FSDP every rank must run the same blocks: one decision for both passes.
    report = _cache_report(frames, "dbcache_all_switches")
    assert report["cached_step_numbers"]["cond"] == report["cached_step_numbers"]["uncond"]
    assert report["cached_steps"]["cond"] > 0


@pytest.mark.parametrize("name", list(CASES_2) + list(CASES_4))
def test_every_topology_reports_the_dit_passes_of_one_process(frames: Path, name: str) -> None:
    # 3 steps: two passes each with guidance, one without, whichever ranks ran them (under CFG
    # parallel each half ran one pass of each step; without guidance both ran the same one).
    import json

    report = json.loads((frames / f"{name}.json").read_text())
    assert report["dit_forwards"] == (6 if report["request"]["guidance"] > 1 else 3)
