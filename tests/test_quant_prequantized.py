"""A DiT stored pre-quantized in LightX2V's int8 format (int8 rows + float32 row scales) loads
straight into torchao's Int8Tensor, without dequantizing, and runs a job; other modes are refused."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.pipeline.loading import LoadOptions, load_components
from inference.quant.modes import QuantizationError
from inference.quant.prequantized import check_prequantized, prequantized_mode
from tests.generate_support import run_on_cpu, tiny_request
from tests.test_quant_quality import MIN_PSNR_DB, _dit_inputs


def lightx2v_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LightX2V's tools/convert/quant/quant.py QuantWeightINT8.load_int8_weight, per output row."""
    scales = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-5) / 127
    return torch.clamp(torch.round(weight / scales), -128, 127).to(torch.int8), scales.view(weight.shape[0], -1)


def _prequantized_copy(tiny_ckpt: Path, target: Path, fmt: torch.dtype) -> tuple[Path, int]:
    """The tiny checkpoint with its DiT block Linear weights stored as LightX2V stores them."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_ckpt, target)
    path = target / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(path)
    model = WanTransformer3DModel.from_pretrained(tiny_ckpt / "transformer")
    linears = [f"{name}.weight" for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and name.startswith("blocks.")]
    for name in linears:
        qdata, scale = lightx2v_int8(tensors[name].float())
        tensors[name] = qdata if fmt == torch.int8 else (qdata.float() * scale).to(torch.float8_e4m3fn)
        tensors[f"{name}_scale"] = scale.float()
    save_file(tensors, path, metadata={"format": "pt"})
    return target, len(linears)


@pytest.fixture(scope="module")
def int8_ckpt(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:  # noqa: F811
    return _prequantized_copy(tiny_ckpt, tmp_path_factory.mktemp("lightx2v") / "int8", torch.int8)


def test_the_int8_dit_loads_as_stored_and_equals_its_dequantized_weights(int8_ckpt, tiny_components, cpu_ctx):  # noqa: F811
    folder, layers = int8_ckpt
    assert prequantized_mode(folder / "transformer") == "int8"
    loaded = load_components(LoadOptions(ckpt_dir=folder, device=cpu_ctx.device, dit_quant="int8"), cpu_ctx)
    assert loaded.quantization["dit"] == "int8" and loaded.quantization["dit_checkpoint"] == "pre-quantized"
    # The stored int8 rows are the Int8Tensor's data, untouched (no dequantize and requantize).
    from safetensors.torch import load_file

    stored = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    to_q = loaded.transformer.blocks[0].attn1.to_q.weight
    assert torch.equal(to_q.qdata, stored["blocks.0.attn1.to_q.weight"])
    assert sum(type(p.data).__name__ == "Int8Tensor" for p in loaded.transformer.parameters()) == layers
    # Its output is the float32 model's with the same int8 x scale weights (float rounding only).
    dequantized = copy.deepcopy(tiny_components.transformer)
    with torch.no_grad():
        for name, param in dequantized.named_parameters():
            if f"{name}_scale" in stored:
                param.copy_(stored[name].float() * stored[f"{name}_scale"])
    inputs = _dit_inputs(dequantized)
    with torch.inference_mode():
        expected = dequantized(**inputs, return_dict=False)[0]
        got = loaded.transformer(**inputs, return_dict=False)[0]
    assert float((got - expected).norm() / expected.norm()) < 1e-5


def test_a_job_on_the_prequantized_dit_matches_the_float32_job(int8_ckpt, tiny_components, cpu_ctx):  # noqa: F811
    loaded = load_components(LoadOptions(ckpt_dir=int8_ckpt[0], device=cpu_ctx.device, dit_quant="int8"), cpu_ctx)
    request = tiny_request()
    reference = run_on_cpu(tiny_components, request).frames.astype(np.float64)
    frames = run_on_cpu(loaded, request).frames.astype(np.float64)
    psnr = 10 * np.log10(255.0**2 / max(float(((frames - reference) ** 2).mean()), 1e-12))
    assert psnr >= MIN_PSNR_DB, psnr


def test_a_prequantized_dit_needs_its_own_mode(int8_ckpt, cpu_ctx):  # noqa: F811
    with pytest.raises(QuantizationError, match="pre-quantized int8 DiT .*: set DIT_QUANT=int8 \\(got none\\)"):
        load_components(LoadOptions(ckpt_dir=int8_ckpt[0], device=cpu_ctx.device), cpu_ctx)


def test_a_prequantized_fp8_dit_is_refused_naming_what_loads(tiny_ckpt, tmp_path):  # noqa: F811
    folder, _ = _prequantized_copy(tiny_ckpt, tmp_path / "fp8", torch.float8_e4m3fn)
    assert prequantized_mode(folder / "transformer") == "fp8"
    # (On the CPU the daemon refuses fp8 for the device first; the checkpoint check holds anywhere.)
    with pytest.raises(QuantizationError, match="pre-quantized fp8 DiT .* does not load yet"):
        check_prequantized(folder / "transformer", "fp8")


def test_a_plain_checkpoint_is_not_prequantized(tiny_ckpt):  # noqa: F811
    assert prequantized_mode(tiny_ckpt / "transformer") is None


def test_a_lightx2v_file_in_the_original_layout_converts_and_loads_pre_quantized(int8_ckpt, cpu_ctx):  # noqa: F811
    # LightX2V publishes the DiT with Wan's own key names: the converter renames the weights and
    # their scales alike, and the result loads as stored.
    from django.core.management import call_command

    from tests.original_layout import write_original_layout

    original = write_original_layout(int8_ckpt[0], int8_ckpt[0].parent / "original-int8")
    call_command("convert_wan_checkpoint", str(original), str(original.parent / "converted-int8"))
    converted = original.parent / "converted-int8"
    assert prequantized_mode(converted / "transformer") == "int8"
    loaded = load_components(LoadOptions(ckpt_dir=converted, device=cpu_ctx.device, dit_quant="int8"), cpu_ctx)
    assert sum(type(p.data).__name__ == "Int8Tensor" for p in loaded.transformer.parameters()) == int8_ckpt[1]
