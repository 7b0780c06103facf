"""The bytes of weights a rank holds, counted through torchao's tensor subclasses and FSDP's
DTensors, and the accelerator's peak memory of a job."""
from __future__ import annotations

from typing import Any

import torch
from torch.distributed.tensor import DTensor

from inference.devices import DeviceSpec, memory_stats, reset_peak_memory


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor's storage holds: its local shard for a DTensor; the inner tensors (int8 or
    fp8 data, scales, zero points) for a torchao tensor, whose ``dtype`` is the original one."""
    if isinstance(tensor, DTensor):
        return tensor_bytes(tensor.to_local())
    if hasattr(type(tensor), "__tensor_flatten__"):  # a traceable subclass: count what it wraps
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(model: torch.nn.Module | None) -> int:
    """Bytes of model's parameters on this rank (shards only, if sharded; quantized as stored)."""
    if model is None:
        return 0
    return sum(tensor_bytes(p.data if isinstance(p, torch.nn.Parameter) else p) for p in model.parameters())


def start_peak(device: DeviceSpec) -> None:
    """Reset the accelerator's peak counter at the start of a job (nothing on the CPU)."""
    reset_peak_memory(device)


def job_peak(device: DeviceSpec) -> int | None:
    """The accelerator's peak allocated bytes since ``start_peak``; None on the CPU."""
    return memory_stats(device).get("max_allocated_bytes")


def memory_document(held: list[dict[str, int]], peaks: list[int | None] | None = None) -> dict[str, Any]:
    """What the worker row publishes: weight bytes per component per rank, and (accelerators)
    the last job's peak per rank."""
    document: dict[str, Any] = {"weights_bytes": [dict(rank) for rank in held]}
    if peaks is not None and any(peak is not None for peak in peaks):
        document["last_job_peak_bytes"] = list(peaks)
    return document
