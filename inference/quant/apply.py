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
from inference.quant.modes import FP8, INT8, NONE, QuantizationError, check_device

logger = logging.getLogger(__name__)

LORA_MARK = "lora_"


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


def quantize_module(model: torch.nn.Module, mode: str, *, block_prefix: str) -> int:
    """Convert model's block Linear weights in place; returns how many layers were converted."""
    # 1. Count first: a model without such layers is a wiring error, never a silent no-op.
    keep = block_linear_filter(block_prefix)
    targets = [name for name, module in model.named_modules() if keep(module, name)]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no Linear layer under {block_prefix!r} to quantize")
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
    if dit_mode != NONE and not dit_prequantized:
        layers = quantize_module(transformer, dit_mode, block_prefix="blocks.")
        logger.info("DiT quantized to %s: %d Linear layers", dit_mode, layers)
    if t5_mode != NONE and text_encoder is not None:
        layers = quantize_module(text_encoder, t5_mode, block_prefix="encoder.block.")
        logger.info("T5 quantized to %s: %d Linear layers", t5_mode, layers)
    report = {"dit": dit_mode, "t5": t5_mode}
    if dit_prequantized:
        report["dit_checkpoint"] = "pre-quantized"
    return report
