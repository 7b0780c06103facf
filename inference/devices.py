"""Which accelerator the inference process runs on: CUDA, Ascend NPU or CPU.

Everything device-specific (availability probes, set_device, cache and memory queries,
the distributed backend name, default dtypes) goes through this module, so the rest of the
inference code only ever sees a ``DeviceSpec``. The attention kernel per device is chosen in
``inference.parallel.sequence.attention_backend_for``.

``torch_npu`` is imported lazily, and only when an NPU is requested or probed: importing it
patches torch globally, and it is absent on CUDA and CPU machines.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

DEVICE_KINDS: tuple[str, ...] = ("cuda", "npu", "cpu")
REQUESTABLE_DEVICES: tuple[str, ...] = ("auto",) + DEVICE_KINDS

_DIST_BACKENDS: dict[str, str] = {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}


@dataclass(frozen=True)
class DeviceSpec:
    kind: str  # "cuda" | "npu" | "cpu"
    index: int
    dist_backend: str  # "nccl" | "hccl" | "gloo"

    def __post_init__(self) -> None:
        if self.kind not in DEVICE_KINDS:
            raise ValueError(f"device kind must be one of {', '.join(DEVICE_KINDS)}, got {self.kind!r}")
        if self.index < 0:
            raise ValueError(f"device index must be >= 0, got {self.index}")

    @property
    def is_accelerator(self) -> bool:
        return self.kind != "cpu"

    @property
    def torch_device(self) -> torch.device:
        # The CPU is one device whatever the rank, so it carries no index.
        if self.kind == "cpu":
            return torch.device("cpu")
        return torch.device(self.kind, self.index)

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"{self.kind}:{self.index}"


def _import_torch_npu() -> ModuleType | None:
    """torch_npu, or None when it is not installed or fails to load (no CANN runtime)."""
    try:
        return importlib.import_module("torch_npu")
    except Exception:  # noqa: BLE001 - a broken CANN install raises all sorts, and means "no NPU"
        return None


def _npu_module() -> Any:
    """The ``torch.npu`` namespace, which exists only after torch_npu was imported."""
    if _import_torch_npu() is None or not hasattr(torch, "npu"):
        raise RuntimeError("device 'npu' requested but torch_npu is not installed or failed to import")
    return torch.npu


def cuda_available() -> bool:
    return torch.cuda.is_available()


def npu_available() -> bool:
    if _import_torch_npu() is None or not hasattr(torch, "npu"):
        return False
    return bool(torch.npu.is_available())


def _device_count(kind: str) -> int:
    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "npu":
        return int(_npu_module().device_count())
    return 1


def _make_spec(kind: str, local_rank: int) -> DeviceSpec:
    if kind == "cpu":
        return DeviceSpec(kind="cpu", index=0, dist_backend=_DIST_BACKENDS["cpu"])
    count = _device_count(kind)
    if local_rank >= count:
        raise RuntimeError(
            f"local rank {local_rank} needs {kind}:{local_rank} but only {count} {kind} device(s) are visible"
        )
    return DeviceSpec(kind=kind, index=local_rank, dist_backend=_DIST_BACKENDS[kind])


def resolve_device(requested: str = "auto", *, local_rank: int = 0) -> DeviceSpec:
    """Turn a device name from the configuration into a DeviceSpec for this rank.

    "auto" prefers cuda, then npu, then cpu. An explicit accelerator that is not usable is an
    error rather than a silent fall back to the CPU: a 14B model on the CPU is never intended.
    """
    # 1. Validate the inputs.
    name = requested.strip().lower()
    if name not in REQUESTABLE_DEVICES:
        raise ValueError(f"unknown device {requested!r}; allowed values: {', '.join(REQUESTABLE_DEVICES)}")
    if local_rank < 0:
        raise ValueError(f"local_rank must be >= 0, got {local_rank}")

    # 2. Auto-detection: the first usable kind wins.
    if name == "auto":
        if cuda_available():
            return _make_spec("cuda", local_rank)
        if npu_available():
            return _make_spec("npu", local_rank)
        return _make_spec("cpu", local_rank)

    # 3. Explicit request: the kind must be usable here.
    if name == "cuda" and not cuda_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False on this machine")
    if name == "npu" and not npu_available():
        raise RuntimeError("device 'npu' requested but torch_npu is not installed or no NPU is available")
    return _make_spec(name, local_rank)


def bind_device(spec: DeviceSpec) -> None:
    """Make spec the current device of this process, so that collectives and default
    allocations land on this rank's accelerator rather than device 0."""
    if spec.kind == "cuda":
        torch.cuda.set_device(spec.index)
    elif spec.kind == "npu":
        _npu_module().set_device(spec.index)


def empty_cache(spec: DeviceSpec) -> None:
    if spec.kind == "cuda":
        torch.cuda.empty_cache()
    elif spec.kind == "npu":
        _npu_module().empty_cache()


def synchronize(spec: DeviceSpec) -> None:
    """Wait for queued kernels, so that wall-clock timings measure the work itself."""
    if spec.kind == "cuda":
        torch.cuda.synchronize(spec.index)
    elif spec.kind == "npu":
        _npu_module().synchronize(spec.index)


def memory_stats(spec: DeviceSpec) -> dict[str, int]:
    """Allocator figures in bytes for reporting; empty on the CPU, which has no such allocator."""
    if spec.kind == "cpu":
        return {}
    backend: Any = torch.cuda if spec.kind == "cuda" else _npu_module()
    return {
        "allocated_bytes": int(backend.memory_allocated(spec.index)),
        "reserved_bytes": int(backend.memory_reserved(spec.index)),
        "max_allocated_bytes": int(backend.max_memory_allocated(spec.index)),
    }


def reset_peak_memory(spec: DeviceSpec) -> None:
    """Start a new peak for ``memory_stats``' max_allocated_bytes (nothing to reset on the CPU)."""
    if spec.kind == "cuda":
        torch.cuda.reset_peak_memory_stats(spec.index)
    elif spec.kind == "npu":
        _npu_module().reset_peak_memory_stats(spec.index)


def default_dtypes(spec: DeviceSpec) -> dict[str, torch.dtype]:
    """Per-component dtypes. On accelerators the big models run in bf16, while the VAE and
    the CLIP image encoder stay in fp32 as Wan does (bf16 there visibly degrades colours and
    the conditioning). CPUs have poor bf16 kernels, so everything is fp32 there."""
    if spec.kind == "cpu":
        return {
            "transformer": torch.float32,
            "text_encoder": torch.float32,
            "vae": torch.float32,
            "image_encoder": torch.float32,
        }
    return {
        "transformer": torch.bfloat16,
        "text_encoder": torch.bfloat16,
        "vae": torch.float32,
        "image_encoder": torch.float32,
    }
