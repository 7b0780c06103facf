"""LoRA adapters on a quantized DiT: the base weights int8 (quantized at start, or stored
pre-quantized by LightX2V), the adapters' own weights left as loaded, and the job's adapters
applied on top. Measured against the float32 model with the same adapters."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.pipeline.loading import LoadOptions, load_components
from tests.generate_support import run_on_cpu, tiny_request
from tests.lora_support import random_deltas, write_lora
from tests.test_quant_prequantized import _prequantized_copy
from tests.test_quant_quality import MIN_PSNR_DB

SCALE = 0.8


def _psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    mse = float(((frames.astype(np.float64) - reference.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


@pytest.fixture(scope="module")
def lora_dir(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    folder = tmp_path_factory.mktemp("quant-loras")
    write_lora(folder, "style", random_deltas(tiny_ckpt, seed=5), "wan")
    return folder


@pytest.fixture(scope="module")
def float_lora(tiny_ckpt: Path, cpu_ctx, lora_dir: Path):  # noqa: F811
    return load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, lora_dir=lora_dir), cpu_ctx)


@pytest.fixture(scope="module")
def int8_lora(tiny_ckpt: Path, cpu_ctx, lora_dir: Path):  # noqa: F811
    return load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, lora_dir=lora_dir,
                                       dit_quant="int8"), cpu_ctx)


@pytest.fixture(scope="module")
def int8_plain(tiny_ckpt: Path, cpu_ctx):  # noqa: F811
    return load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, dit_quant="int8"), cpu_ctx)


def _linear_weights(model: torch.nn.Module, *, lora: bool) -> dict[str, torch.Tensor]:
    return {name: module.weight for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.startswith("blocks.") and ("lora_" in name) == lora}


def test_the_base_is_quantized_and_the_adapters_keep_their_dtype(int8_lora) -> None:
    base = _linear_weights(int8_lora.transformer, lora=False)
    adapters = _linear_weights(int8_lora.transformer, lora=True)
    assert base and adapters
    # torchao's quantized weights are tensor subclasses holding int8 data; the adapters stay plain
    # float32 tensors.
    assert all(getattr(weight, "qdata", None) is not None and weight.qdata.dtype == torch.int8 for weight in base.values())
    assert all(type(weight.data) is torch.Tensor and weight.dtype == torch.float32 for weight in adapters.values())


def test_an_int8_lora_job_matches_the_float32_lora_job_within_the_stated_psnr(float_lora, int8_lora, int8_plain) -> None:
    request = tiny_request(loras=[("style", SCALE)])
    reference = run_on_cpu(float_lora, request).frames
    result = run_on_cpu(int8_lora, request)
    assert _psnr(result.frames, reference) >= MIN_PSNR_DB
    assert result.acceleration["quantization"]["dit"] == "int8"
    assert result.acceleration["loras"] == [{"name": "style", "scale": SCALE}]
    # The adapter does act on the quantized base.
    assert not np.array_equal(result.frames, run_on_cpu(int8_plain, tiny_request()).frames)


def test_an_int8_job_without_loras_equals_the_int8_daemon_without_adapters(int8_lora, int8_plain) -> None:
    plain = run_on_cpu(int8_plain, tiny_request()).frames
    run_on_cpu(int8_lora, tiny_request(loras=[("style", SCALE)]))  # a LoRA job first: nothing may leak
    assert np.array_equal(run_on_cpu(int8_lora, tiny_request(loras=[])).frames, plain)
    assert np.array_equal(run_on_cpu(int8_lora, tiny_request(loras=[("style", 0.0)])).frames, plain)


def test_a_prequantized_int8_dit_takes_the_adapters_too(tiny_ckpt: Path, tmp_path: Path, cpu_ctx, lora_dir: Path,
                                                         float_lora) -> None:  # noqa: F811
    folder, _ = _prequantized_copy(tiny_ckpt, tmp_path / "int8", torch.int8)
    loaded = load_components(LoadOptions(ckpt_dir=folder, device=cpu_ctx.device, lora_dir=lora_dir, dit_quant="int8"),
                             cpu_ctx)
    assert loaded.quantization["dit_checkpoint"] == "pre-quantized"
    assert [entry["name"] for entry in loaded.loras.describe()] == ["style"]
    request = tiny_request(loras=[("style", SCALE)])
    assert _psnr(run_on_cpu(loaded, request).frames, run_on_cpu(float_lora, request).frames) >= MIN_PSNR_DB
