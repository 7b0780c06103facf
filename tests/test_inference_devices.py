"""inference.devices: device resolution, per-device helpers and attention backend selection."""
from __future__ import annotations

import pytest
import torch

from inference import devices
from inference.devices import DeviceSpec


@pytest.fixture
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "npu_available", lambda: False)


@pytest.fixture
def two_cuda_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_falls_back_to_cpu_without_accelerators(no_accelerators: None) -> None:
    spec = devices.resolve_device("auto", local_rank=3)
    assert spec == DeviceSpec(kind="cpu", index=0, dist_backend="gloo")
    assert spec.torch_device == torch.device("cpu")
    assert str(spec) == "cpu"


def test_auto_prefers_cuda_and_uses_the_local_rank_as_index(two_cuda_devices: None) -> None:
    spec = devices.resolve_device("auto", local_rank=1)
    assert spec == DeviceSpec(kind="cuda", index=1, dist_backend="nccl")
    assert spec.torch_device == torch.device("cuda", 1)
    assert str(spec) == "cuda:1"


def test_auto_picks_npu_when_there_is_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "npu_available", lambda: True)
    monkeypatch.setattr(devices, "_device_count", lambda kind: 8)
    spec = devices.resolve_device("auto", local_rank=5)
    assert spec == DeviceSpec(kind="npu", index=5, dist_backend="hccl")
    assert str(spec) == "npu:5"


def test_local_rank_beyond_the_visible_devices_is_an_error(two_cuda_devices: None) -> None:
    with pytest.raises(RuntimeError, match=r"local rank 2 needs cuda:2 but only 2 cuda device"):
        devices.resolve_device("cuda", local_rank=2)


def test_explicit_cuda_without_cuda_is_an_error(no_accelerators: None) -> None:
    with pytest.raises(RuntimeError, match=r"device 'cuda' requested but torch.cuda.is_available\(\) is False"):
        devices.resolve_device("cuda")


def test_explicit_npu_without_torch_npu_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_import_torch_npu", lambda: None)
    with pytest.raises(RuntimeError, match=r"device 'npu' requested but torch_npu is not installed"):
        devices.resolve_device("npu")


def test_unknown_device_name_lists_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; allowed values: auto, cuda, npu, cpu"):
        devices.resolve_device("tpu")


def test_device_names_are_case_and_space_insensitive(no_accelerators: None) -> None:
    assert devices.resolve_device(" CPU ").kind == "cpu"


def test_negative_local_rank_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"local_rank must be >= 0, got -1"):
        devices.resolve_device("cpu", local_rank=-1)


def test_device_spec_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"device kind must be one of cuda, npu, cpu, got 'mps'"):
        DeviceSpec(kind="mps", index=0, dist_backend="gloo")


def test_cpu_helpers_are_no_ops_and_report_no_memory() -> None:
    spec = devices.resolve_device("cpu")
    devices.bind_device(spec)
    devices.empty_cache(spec)
    devices.synchronize(spec)
    assert devices.memory_stats(spec) == {}


def test_cpu_runs_everything_in_fp32() -> None:
    dtypes = devices.default_dtypes(devices.resolve_device("cpu"))
    assert dtypes == {
        "transformer": torch.float32,
        "text_encoder": torch.float32,
        "vae": torch.float32,
        "image_encoder": torch.float32,
    }


@pytest.mark.parametrize("kind", ["cuda", "npu"])
def test_accelerators_run_the_big_models_in_bf16_and_vae_and_clip_in_fp32(kind: str) -> None:
    spec = DeviceSpec(kind=kind, index=0, dist_backend="nccl" if kind == "cuda" else "hccl")
    dtypes = devices.default_dtypes(spec)
    assert dtypes["transformer"] == torch.bfloat16
    assert dtypes["text_encoder"] == torch.bfloat16
    assert dtypes["vae"] == torch.float32
    assert dtypes["image_encoder"] == torch.float32
