"""Quantized weights on the tiny model, on the CPU: what they cost in accuracy (measured against
the float32 model, with stated tolerances), what they save in bytes (equal to the stored tensors'
bytes), and the refusal of the modes the CPU cannot run."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel

from inference.pipeline.loading import LoadOptions, load_components
from inference.quant.apply import quantize_components, quantize_module
from inference.quant.memory import weight_bytes
from inference.quant.modes import QuantizationError
from tests.generate_support import run_on_cpu, tiny_request

# INT8 weight-only with per-channel scales: each weight is off by at most half a step (1/254 of
# its row's largest magnitude); through the tiny DiT's 2 blocks that stays under 1% of the output.
DIT_RELATIVE_ERROR = {"int8": 1e-2}
# The frames of a whole job (2 steps, CFG) through the int8 DiT and T5 against the float32 job's.
MIN_PSNR_DB = 40.0


@pytest.fixture(scope="module")
def int8_components(tiny_ckpt: Path, cpu_ctx):  # noqa: F811
    return load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, dit_quant="int8", t5_quant="int8"),
                           cpu_ctx)


def _dit_inputs(model: WanTransformer3DModel) -> dict[str, torch.Tensor]:
    config = model.config
    generator = torch.Generator().manual_seed(3)
    return {
        "hidden_states": torch.randn(1, config.in_channels, 3, 8, 8, generator=generator),  # (B, C, F, H, W) latents
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 16, config.text_dim, generator=generator),  # (B, L, text_dim)
        "encoder_hidden_states_image": torch.randn(1, 5, config.image_dim, generator=generator),  # (B, tokens, image_dim)
    }


@pytest.mark.parametrize("mode", list(DIT_RELATIVE_ERROR))
def test_the_quantized_dit_output_stays_within_its_stated_relative_error(tiny_components, mode):  # noqa: F811
    reference = tiny_components.transformer
    quantized = copy.deepcopy(reference)
    quantize_module(quantized, mode, block_prefix="blocks.")
    inputs = _dit_inputs(reference)
    with torch.inference_mode():
        expected = reference(**inputs, return_dict=False)[0]
        got = quantized(**inputs, return_dict=False)[0]
    error = float((got - expected).norm() / expected.norm())
    assert 0 < error < DIT_RELATIVE_ERROR[mode], error  # 0 would mean nothing was quantized


def test_an_int8_job_matches_the_float32_job_within_the_stated_psnr(tiny_components, int8_components):  # noqa: F811
    request = tiny_request()
    reference = run_on_cpu(tiny_components, request).frames.astype(np.float64)
    result = run_on_cpu(int8_components, request)
    assert result.frames.shape == reference.shape
    mse = float(((result.frames.astype(np.float64) - reference) ** 2).mean())
    psnr = 10 * np.log10(255.0**2 / mse) if mse else float("inf")
    assert psnr >= MIN_PSNR_DB, psnr
    assert result.acceleration["quantization"] == {
        "dit": "int8", "t5": "int8", "attention": {"backend": "native", "quantized": False},
    }


def _expected_bytes(model: torch.nn.Module, block_prefix: str) -> int:
    """Bytes from the float32 model's shapes: a quantized (out, in) Linear weight is out*in int8
    values plus a float32 scale and an int8 zero point per output row; everything else as is."""
    total, seen = 0, set()
    for name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # tied weights (UMT5's shared embedding) are held once
                continue
            seen.add(id(param))
            if isinstance(module, torch.nn.Linear) and param_name == "weight" and name.startswith(block_prefix):
                out_features, in_features = param.shape
                total += out_features * in_features + out_features * (4 + 1)
            else:
                total += param.numel() * param.element_size()
    return total


def test_the_memory_report_equals_the_parameter_bytes(tiny_components, int8_components):  # noqa: F811
    # float32: every parameter's numel x 4 bytes; int8: the stored int8 data and its scales.
    for name in ("transformer", "text_encoder", "image_encoder", "vae"):
        module = getattr(tiny_components, name)
        assert tiny_components.held_bytes[name] == sum(p.numel() * 4 for p in module.parameters())
    assert int8_components.held_bytes["transformer"] == _expected_bytes(tiny_components.transformer, "blocks.")
    assert int8_components.held_bytes["text_encoder"] == _expected_bytes(tiny_components.text_encoder, "encoder.block.")
    assert int8_components.held_bytes["transformer"] < 0.7 * tiny_components.held_bytes["transformer"]
    assert weight_bytes(None) == 0


def test_lora_adapters_are_left_in_their_dtype(tiny_components):  # noqa: F811
    # The order contract with LoRA: adapters are injected first, then only the base is quantized.
    model = copy.deepcopy(tiny_components.transformer)
    block = model.blocks[0].attn1
    block.to_q.lora_A = torch.nn.Linear(block.to_q.in_features, 4, bias=False)  # what peft adds, by name
    quantize_module(model, "int8", block_prefix="blocks.")
    assert type(block.to_q.lora_A.weight.data) is torch.Tensor and block.to_q.lora_A.weight.dtype == torch.float32
    assert type(block.to_k.weight.data) is not torch.Tensor  # the base next to it is quantized


def test_fp8_is_refused_on_the_cpu_before_any_weight_changes(tiny_components, cpu_ctx):  # noqa: F811
    model = copy.deepcopy(tiny_components.transformer)
    with pytest.raises(QuantizationError, match="DIT_QUANT=fp8 needs a CUDA GPU of compute capability 8.9"):
        quantize_components(transformer=model, text_encoder=None, dit_mode="fp8", t5_mode="none", device=cpu_ctx.device)
    assert all(type(p.data) is torch.Tensor for p in model.parameters())


def test_fsdp_of_a_quantized_dit_is_refused_at_load(tiny_ckpt, cpu_ctx):  # noqa: F811
    import dataclasses

    ctx = dataclasses.replace(cpu_ctx, topology=dataclasses.replace(cpu_ctx.topology, dit_fsdp=True))
    with pytest.raises(QuantizationError, match="DIT_QUANT=int8 with DIT_FSDP=true is not supported"):
        load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, dit_quant="int8"), ctx)
