"""DIT_QUANT / T5_QUANT: the settings, the system check, the start-up refusals, and the attention backends."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference import checks as inference_checks
from inference.quant.modes import QuantizationError, check_combination, check_device

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("variable,value", [("DIT_QUANT", "fp4"), ("T5_QUANT", "fp8")])
def test_a_bad_mode_stops_the_settings_naming_the_variable(variable, value):
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and f"{variable} must be one of" in result.stderr


@pytest.mark.parametrize("fsdp,quant", [("DIT_FSDP", "DIT_QUANT"), ("T5_FSDP", "T5_QUANT")])
def test_fsdp_of_a_quantized_model_is_a_system_check_error(settings, fsdp, quant):
    setattr(settings, fsdp, True)
    setattr(settings, quant, "int8")
    messages = inference_checks.check_quantization()
    assert [m.id for m in messages] == ["inference.E001"]
    assert f"{quant}=int8 with {fsdp}=true is not supported" in messages[0].msg


def test_quantization_without_fsdp_passes_the_system_check(settings):
    settings.DIT_QUANT, settings.T5_QUANT, settings.DIT_FSDP, settings.T5_FSDP = "fp8", "int8", False, False
    assert inference_checks.check_quantization() == []


def test_fp8_on_the_cpu_is_refused_naming_the_device_requirement():
    with pytest.raises(QuantizationError, match=r"DIT_QUANT=fp8 needs a CUDA GPU of compute capability 8\.9"):
        check_device(variable="DIT_QUANT", mode="fp8", device_kind="cpu", capability=None)


@pytest.mark.parametrize("kind,capability", [("cuda", (8, 0)), ("cuda", (8, 6)), ("npu", None)])
def test_fp8_on_an_older_gpu_or_the_npu_is_refused(kind, capability):
    with pytest.raises(QuantizationError, match="compute capability 8.9 or above"):
        check_device(variable="DIT_QUANT", mode="fp8", device_kind=kind, capability=capability)


@pytest.mark.parametrize("capability", [(8, 9), (9, 0), (10, 0)])
def test_fp8_runs_on_ada_hopper_and_blackwell(capability):
    check_device(variable="DIT_QUANT", mode="fp8", device_kind="cuda", capability=capability)


@pytest.mark.parametrize("kind", ["cpu", "cuda", "npu"])
def test_int8_is_allowed_on_every_device(kind):
    check_device(variable="DIT_QUANT", mode="int8", device_kind=kind, capability=(7, 0) if kind == "cuda" else None)


def test_an_unknown_mode_is_refused_with_the_allowed_ones():
    with pytest.raises(QuantizationError, match="T5_QUANT must be one of none, int8, got 'fp8'"):
        check_combination(dit_quant="none", t5_quant="fp8", dit_fsdp=False, t5_fsdp=False)


def test_a_named_8bit_attention_without_its_package_is_refused_at_start():
    import importlib.util

    from inference.parallel.sequence import attention_backend_for

    if importlib.util.find_spec("sageattention") is not None:
        pytest.skip("sageattention is installed here")
    with pytest.raises(ValueError, match="ATTENTION_BACKEND=sage cannot run here: .*sageattention"):
        attention_backend_for("cuda", ring=False, dtype=torch.bfloat16, requested="sage")


@pytest.mark.parametrize("kind,ring", [("cuda", False), ("cuda", True), ("npu", False), ("cpu", False), ("cpu", True)])
def test_auto_never_picks_a_quantized_attention(kind, ring):
    from inference.parallel.sequence import attention_backend_for
    from inference.quant.attention import attention_report, is_quantized_attention

    backend = attention_backend_for(kind, ring=ring, dtype=torch.bfloat16)
    assert not is_quantized_attention(backend)
    assert attention_report("sage") == {"backend": "sage", "quantized": True}
