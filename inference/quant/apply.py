"""Quantizing the loaded DiT and T5 weights with torchao, once, at daemon start.

Order (the loader's contract): load -> LoRA adapters injected -> quantize the base weights ->
sequence parallel -> compile. FSDP is refused with a quantized model (``modes.check_combination``).

What is converted: the ``nn.Linear`` layers inside the repeated blocks (the DiT's 40
``blocks``, UMT5's 24 ``encoder.block``), which hold 99% of the weights, as LightX2V does. The
embeddings, the time and condition projections, the output head and the norms keep their dtype;
so do LoRA adapters (any module whose qualified name contains ``lora_``): they are applied on top
of the quantized base.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from inference.devices import DeviceSpec
from inference.lora.inject import LORA_MARK
from inference.quant.modes import FP8, INT8, NONE, QuantizationError, check_device
from inference.quant.npu import KERNEL_NAME as NPU_KERNEL
from inference.quant.npu import adopt_int8_tensors, quantize_module_npu

logger = logging.getLogger(__name__)

TORCHAO = "torchao"


def cuda_capability(device: DeviceSpec) -> tuple[int, int] | None:
    if device.kind != "cuda":
        return None
    return tuple(torch.cuda.get_device_capability(device.index))  # type: ignore[return-value]


def torchao_config(mode: str) -> Any:
    """The torchao configuration of a mode (int8: weight-only; fp8: dynamic activation + weight, per row)."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig, PerRow

    if mode == INT8:
        return Int8WeightOnlyConfig()
    if mode == FP8:
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    raise ValueError(f"no torchao configuration for quantization mode {mode!r}")


def block_linear_filter(block_prefix: str):
    """torchao's filter: the Linear layers under ``block_prefix``, never a LoRA adapter's."""
    def keep(module: torch.nn.Module, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and name.startswith(block_prefix) and LORA_MARK not in name
    return keep


def quantize_module(model: torch.nn.Module, mode: str, *, block_prefix: str, kernel: str = TORCHAO) -> int:
    """Convert model's block Linear weights in place; returns how many layers were converted.
    ``kernel``: torchao's tensors, or (int8 on an NPU) torch_npu's weight-quantized matmul."""
    # 1. Count first: a model without such layers is a wiring error, never a silent no-op.
    keep = block_linear_filter(block_prefix)
    targets = [name for name, module in model.named_modules() if keep(module, name)]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no Linear layer under {block_prefix!r} to quantize")
    if kernel == NPU_KERNEL:
        if mode != INT8:
            raise QuantizationError(f"{mode} has no NPU kernel here; the NPU runs int8 ({NPU_KERNEL})")
        return quantize_module_npu(model, keep)
    # 2. The Linear weight (out, in) becomes a torchao tensor: int8 data (out, in) + scales (out,).
    from torchao.quantization import quantize_

    quantize_(model, torchao_config(mode), filter_fn=keep)
    return len(targets)


def check_modes_on_device(*, dit_mode: str, t5_mode: str, device: DeviceSpec) -> None:
    """DIT_QUANT and T5_QUANT against this rank's device: one line naming the requirement."""
    capability = cuda_capability(device)
    check_device(variable="DIT_QUANT", mode=dit_mode, device_kind=device.kind, capability=capability)
    check_device(variable="T5_QUANT", mode=t5_mode, device_kind=device.kind, capability=capability)


def quantize_components(
    *, transformer: torch.nn.Module, text_encoder: torch.nn.Module | None, dit_mode: str, t5_mode: str,
    device: DeviceSpec, dit_prequantized: bool = False,
) -> dict[str, str]:
    """Apply DIT_QUANT and T5_QUANT (after the device check); returns the modes that ran. A DiT
    loaded pre-quantized (``inference.quant.prequantized``) is reported, not converted again."""
    # 1. Refuse what this device cannot run, naming the requirement, before touching weights.
    check_modes_on_device(dit_mode=dit_mode, t5_mode=t5_mode, device=device)
    if dit_mode == FP8 and transformer.dtype != torch.bfloat16:
        raise QuantizationError(f"DIT_QUANT=fp8 needs a bfloat16 DiT (torchao's per-row FP8 takes bf16 weights); "
                                f"DIT_DTYPE gives {transformer.dtype}")
    # 2. The DiT's blocks, then T5's (T5_CPU: on the host, where int8 runs too; absent on ranks > 0).
    #    On an NPU, int8 runs on torch_npu's own kernel (no NPU build of torchao exists).
    dit_kernel = NPU_KERNEL if device.kind == "npu" else TORCHAO
    t5_kernel = NPU_KERNEL if device.kind == "npu" and not _on_host(text_encoder) else TORCHAO
    if dit_mode != NONE and not dit_prequantized:
        layers = quantize_module(transformer, dit_mode, block_prefix="blocks.", kernel=dit_kernel)
        logger.info("DiT quantized to %s with %s: %d Linear layers", dit_mode, dit_kernel, layers)
    elif dit_prequantized and dit_kernel == NPU_KERNEL:  # the stored int8 rows, onto torch_npu's kernel
        layers = adopt_int8_tensors(transformer, block_linear_filter("blocks."))
        logger.info("pre-quantized DiT on %s: %d Linear layers", dit_kernel, layers)
    if t5_mode != NONE and text_encoder is not None:
        layers = quantize_module(text_encoder, t5_mode, block_prefix="encoder.block.", kernel=t5_kernel)
        logger.info("T5 quantized to %s with %s: %d Linear layers", t5_mode, t5_kernel, layers)
    report = {"dit": dit_mode, "t5": t5_mode}
    if dit_prequantized:
        report["dit_checkpoint"] = "pre-quantized"
    if device.kind == "npu":  # which kernel each quantized model runs on (T5_CPU: torchao on the host)
        report["kernels"] = {"dit": dit_kernel if dit_mode != NONE else NONE, "t5": t5_kernel if t5_mode != NONE else NONE}
    return report


def _on_host(model: torch.nn.Module | None) -> bool:
    """Whether a loaded model sits in host memory (T5_CPU) rather than on the accelerator."""
    first = next(model.parameters(), None) if model is not None else None
    return first is not None and first.device.type == "cpu"
