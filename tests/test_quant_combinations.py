"""The combinations table of the README, cell by cell where the CPU runs it: an INT8 DiT and T5
on 2 gloo ranks (Ulysses, ring, CFG parallel, T5 on the CPU, the step caches under Ulysses and
CFG parallel) against the single-process INT8 frames, INT8 with COMPILE=1 against eager INT8,
and the refusal of FSDP of a quantized model. fp8 needs CUDA sm89+: not a CPU cell."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_parallel_parity import ATTENTION_CACHE, DBCACHE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
QUANT = ["--dit-quant", "int8", "--t5-quant", "int8"]

# name: (switches, extra trial arguments, single-process reference, exact)
CASES = {
    "int8_ulysses2": ("ULYSSES_SIZE=2", [], "int8_single", False),
    "int8_ring2": ("RING_SIZE=2,ULYSSES_SIZE=1", [], "int8_single", False),
    "int8_cfg2": ("CFG_SIZE=2", [], "int8_single", True),
    "int8_t5_cpu": ("CFG_SIZE=2,T5_CPU=1", [], "int8_single", True),
    "int8_attention_cache_cfg2": ("CFG_SIZE=2", ATTENTION_CACHE, "int8_single_attention_cache", True),
    "int8_dbcache_ulysses2": ("ULYSSES_SIZE=2", DBCACHE, "int8_single_dbcache", False),
}


def _trial(ckpt: Path, out: Path, nproc: int, cases: list[str], extra: list[str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "inference.trial", "--ckpt", str(ckpt), "--out", str(out), *QUANT, *extra]
    for case in cases:
        argv += ["--case", case]
    return subprocess.run(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def frames(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("quant-combinations")
    runs = [
        (1, ["int8_single:"], []),
        (1, ["int8_single_attention_cache:"], ATTENTION_CACHE),
        (1, ["int8_single_dbcache:"], DBCACHE),
        (2, [f"{name}:{switches}" for name, (switches, extra, _, _) in CASES.items() if not extra], []),
        (2, ["int8_attention_cache_cfg2:CFG_SIZE=2"], ATTENTION_CACHE),
        (2, ["int8_dbcache_ulysses2:ULYSSES_SIZE=2"], DBCACHE),
    ]
    for nproc, cases, extra in runs:
        result = _trial(tiny_ckpt, out, nproc, cases, extra)
        assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_an_int8_model_on_two_ranks_equals_its_single_process_frames(frames: Path, name: str) -> None:
    _, _, reference, exact = CASES[name]
    single, parallel = np.load(frames / f"{reference}.npy"), np.load(frames / f"{name}.npy")
    assert parallel.shape == single.shape == (9, 80, 64, 3)
    report = json.loads((frames / f"{name}.json").read_text())
    assert report["acceleration"]["quantization"]["dit"] == "int8"
    if exact:
        np.testing.assert_array_equal(parallel, single)
        return
    # As tests/test_parallel_parity.py: split matrix products may round the last float bit.
    difference = np.abs(parallel.astype(np.int16) - single.astype(np.int16))
    assert difference.max() <= 1 and (difference > 0).mean() <= 1e-3


def test_the_step_caches_reuse_steps_on_an_int8_model(frames: Path) -> None:
    cached = json.loads((frames / "int8_attention_cache_cfg2.json").read_text())["acceleration"]["cache"]
    assert cached["reused"] == {"cond": 2, "uncond": 2}
    adaptive = json.loads((frames / "int8_dbcache_ulysses2.json").read_text())["acceleration"]["cache"]
    assert adaptive["cached_steps"]["cond"] > 0


def test_int8_ranks_report_the_quantized_bytes(frames: Path, tiny_ckpt: Path) -> None:  # noqa: F811
    # T5 on the CPU lives on rank 0 only, quantized there; the DiT is whole and int8 on both ranks.
    report = json.loads((frames / "int8_t5_cpu.json").read_text())
    single = json.loads((frames / "int8_single.json").read_text())["ranks"][0]["held_bytes"]
    held = [rank["held_bytes"] for rank in report["ranks"]]
    assert held[0]["text_encoder"] == single["text_encoder"] and held[1]["text_encoder"] == 0
    assert held[0]["transformer"] == held[1]["transformer"] == single["transformer"]


def test_fsdp_of_an_int8_dit_is_refused_at_start_naming_the_combination(tiny_ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    result = _trial(tiny_ckpt, tmp_path, 2, ["fsdp:CFG_SIZE=2,DIT_FSDP=1"], [])
    assert result.returncode != 0
    assert "DIT_QUANT=int8 with DIT_FSDP=true is not supported" in result.stderr + result.stdout


def test_compiled_int8_blocks_equal_eager_int8(tiny_ckpt: Path) -> None:  # noqa: F811
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "compile_check.py"), str(tiny_ckpt), "int8"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["graphs_after_warmup"] >= 7 and report["graphs_after_jobs"] == report["graphs_after_warmup"]
    assert report["max_difference"] <= 1 and report["differing_fraction"] <= 1e-3
