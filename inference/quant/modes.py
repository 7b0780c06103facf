"""The quantization modes and the rules that can be decided without torch.

``DIT_QUANT``: none | fp8 | int8; ``T5_QUANT``: none | int8. Both are applied once at daemon
start, after loading and before sharding and compilation (``inference.quant.apply``):

- int8: torchao's INT8 weight-only (per-channel symmetric weights, activations stay in the
  model's dtype). Runs wherever torch runs, the CPU included; on an NPU, torch_npu's own
  weight-quantized matmul with the same rows (``inference.quant.npu``).
- fp8: torchao's FP8 dynamic activation + FP8 weight (e4m3, per-row scales), torch._scaled_mm.
  Needs a CUDA GPU of compute capability 8.9 or above (Ada, Hopper, Blackwell).

This module imports nothing heavy: the web process's system check uses it too.
"""
from __future__ import annotations

NONE = "none"
FP8 = "fp8"
INT8 = "int8"
DIT_MODES: tuple[str, ...] = (NONE, FP8, INT8)
T5_MODES: tuple[str, ...] = (NONE, INT8)

FP8_MIN_CAPABILITY = (8, 9)
FP8_REQUIREMENT = "a CUDA GPU of compute capability 8.9 or above (Ada, Hopper, Blackwell: L4, L40S, H100, H200, B200)"


class QuantizationError(ValueError):
    """A quantization mode that this device or this topology cannot run (one line for the operator)."""


def check_mode(variable: str, mode: str, allowed: tuple[str, ...]) -> None:
    if mode not in allowed:
        raise QuantizationError(f"{variable} must be one of {', '.join(allowed)}, got {mode!r}")


def check_combination(*, dit_quant: str, t5_quant: str, dit_fsdp: bool, t5_fsdp: bool) -> None:
    """Combinations refused at start whatever the device.

    FSDP2 shards plain parameters into DTensors, and sharded loading fills the shards straight from
    the checkpoint: quantizing first would need every rank to hold the whole model, and
    ``fully_shard`` cannot shard torchao's inference tensors anyway (torchao 0.18, torch 2.13, gloo:
    ``Int8Tensor dispatch: ... unimplemented operator aten.split``)."""
    check_mode("DIT_QUANT", dit_quant, DIT_MODES)
    check_mode("T5_QUANT", t5_quant, T5_MODES)
    if dit_fsdp and dit_quant != NONE:
        raise QuantizationError(
            f"DIT_QUANT={dit_quant} with DIT_FSDP=true is not supported: torchao's quantized weights cannot be "
            "sharded by FSDP2; use one of them (an int8 DiT holds about half the bf16 bytes on every rank)"
        )
    if t5_fsdp and t5_quant != NONE:
        raise QuantizationError(
            f"T5_QUANT={t5_quant} with T5_FSDP=true is not supported: torchao's quantized weights cannot be "
            "sharded by FSDP2; use one of them, or T5_CPU=true with T5_QUANT=int8"
        )


def check_device(*, variable: str, mode: str, device_kind: str, capability: tuple[int, int] | None) -> None:
    """Refuse a mode this device cannot run, naming the requirement. ``capability`` is the CUDA
    compute capability (None off CUDA)."""
    if mode != FP8:
        return
    if device_kind != "cuda":
        raise QuantizationError(f"{variable}=fp8 needs {FP8_REQUIREMENT}; this daemon runs on {device_kind}")
    if capability is None or tuple(capability) < FP8_MIN_CAPABILITY:
        found = "unknown" if capability is None else f"{capability[0]}.{capability[1]}"
        raise QuantizationError(f"{variable}=fp8 needs {FP8_REQUIREMENT}; this GPU has compute capability {found}")
