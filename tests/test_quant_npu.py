"""INT8 on Ascend: the block Linears become NpuInt8Linear on torch_npu's weight-quantized matmul.

No NPU exists here, so the kernel is replaced by its documented formula (Ascend's
npu_weight_quant_batchmatmul reference, as torch_npu's own op test computes it:
``x @ (weight * antiquant_scale)`` with weight (K, N) int8 and a scale per output channel). What
is tested is ours: the int8 rows and scales, the layout handed to the kernel, the shapes, which
model goes to which kernel, and the outputs against torchao's int8 and the float model."""
from __future__ import annotations

import copy

import pytest
import torch

from inference.devices import DeviceSpec
from inference.quant import npu
from inference.quant.apply import block_linear_filter, quantize_components, quantize_module
from inference.quant.npu import NpuInt8Linear, adopt_int8_tensors, symmetric_int8_rows
from tests.test_quant_prequantized import lightx2v_int8
from tests.test_quant_quality import DIT_RELATIVE_ERROR, _dit_inputs

NPU = DeviceSpec(kind="npu", index=0, dist_backend="hccl")
CALLS: list[tuple[tuple[int, ...], tuple[int, ...], torch.dtype]] = []


def documented_kernel(x: torch.Tensor, weight: torch.Tensor, antiquant_scale: torch.Tensor) -> torch.Tensor:
    """npu_weight_quant_batchmatmul's formula, with the checks its documentation states for the 910B."""
    assert x.dim() == 2 and weight.dim() == 2 and weight.dtype == torch.int8, (x.shape, weight.shape, weight.dtype)
    assert x.shape[1] == weight.shape[0] and antiquant_scale.shape == (weight.shape[1],)
    assert antiquant_scale.dtype == x.dtype
    CALLS.append((tuple(x.shape), tuple(weight.shape), x.dtype))
    return x @ (weight.to(x.dtype) * antiquant_scale)


@pytest.fixture(autouse=True)
def _documented_kernel(monkeypatch):
    CALLS.clear()
    monkeypatch.setattr(npu, "npu_matmul", lambda: documented_kernel)


def test_the_int8_rows_are_lightx2vs_rows() -> None:
    linear = torch.nn.Linear(48, 32, bias=True)
    qdata, scale = symmetric_int8_rows(linear.weight)
    assert qdata.dtype == torch.int8 and qdata.shape == (32, 48) and scale.shape == (32,)
    # LightX2V's per-row symmetric int8 (its int8 checkpoints hold exactly these rows and scales).
    expected_rows, expected_scales = lightx2v_int8(linear.weight.detach().float())
    assert torch.equal(qdata, expected_rows)
    torch.testing.assert_close(scale, expected_scales.reshape(-1), rtol=1e-6, atol=0)


def test_a_layer_keeps_the_leading_dimensions_and_stays_near_the_float_layer() -> None:
    linear = torch.nn.Linear(48, 32, bias=True)
    layer = NpuInt8Linear.from_linear(linear, matmul=documented_kernel)
    x = torch.randn(2, 7, 48)
    with torch.inference_mode():
        got, expected = layer(x), linear(x)
    assert got.shape == (2, 7, 32)
    assert float((got - expected).norm() / expected.norm()) < 1e-2
    assert CALLS == [((14, 48), (48, 32), torch.float32)]  # (M, K) by (K, N): the rows handed transposed
    assert layer.weight.dtype == torch.int8 and not layer.weight.requires_grad


def test_on_an_npu_the_dit_runs_torch_npus_kernel_and_t5_on_the_host_keeps_torchao(tiny_components) -> None:  # noqa: F811
    dit, t5 = copy.deepcopy(tiny_components.transformer), copy.deepcopy(tiny_components.text_encoder)
    report = quantize_components(transformer=dit, text_encoder=t5, dit_mode="int8", t5_mode="int8", device=NPU)
    assert report["kernels"] == {"dit": npu.KERNEL_NAME, "t5": "torchao"}  # T5 sits in host memory (T5_CPU)
    replaced = [name for name, module in dit.named_modules() if isinstance(module, NpuInt8Linear)]
    wanted = [name for name, module in tiny_components.transformer.named_modules()
              if block_linear_filter("blocks.")(module, name)]
    assert replaced == wanted and wanted
    assert not any(isinstance(module, NpuInt8Linear) for module in t5.modules())
    # The DiT's output: within the int8 tolerance of the float model, and equal (float rounding) to
    # the float model given the dequantized weights, rows times scales.
    dequantized = copy.deepcopy(tiny_components.transformer)
    for name in wanted:
        layer = dequantized.get_submodule(name)
        rows, scale = symmetric_int8_rows(layer.weight)
        layer.weight.data = rows.float() * scale[:, None]
    inputs = _dit_inputs(dit)
    with torch.inference_mode():
        expected = tiny_components.transformer(**inputs, return_dict=False)[0]
        ours = dit(**inputs, return_dict=False)[0]
        theirs = dequantized(**inputs, return_dict=False)[0]
    assert 0 < float((ours - expected).norm() / expected.norm()) < DIT_RELATIVE_ERROR["int8"]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_a_prequantized_dit_moves_onto_the_npu_kernel_without_dequantizing(tiny_components) -> None:  # noqa: F811
    stored = copy.deepcopy(tiny_components.transformer)
    quantize_module(stored, "int8", block_prefix="blocks.")  # torchao Int8Tensors, as the loader gives them
    rows = stored.blocks[0].attn1.to_q.weight.qdata.clone()
    inputs = _dit_inputs(stored)
    with torch.inference_mode():
        before = stored(**inputs, return_dict=False)[0]
    assert adopt_int8_tensors(stored, block_linear_filter("blocks."), matmul=documented_kernel) > 0
    assert isinstance(stored.blocks[0].attn1.to_q, NpuInt8Linear)
    assert torch.equal(stored.blocks[0].attn1.to_q.weight, rows)  # the stored int8 rows, untouched
    with torch.inference_mode():
        after = stored(**inputs, return_dict=False)[0]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_fp8_has_no_npu_kernel(tiny_components) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="no NPU kernel"):
        quantize_module(copy.deepcopy(tiny_components.transformer), "fp8", block_prefix="blocks.", kernel=npu.KERNEL_NAME)
