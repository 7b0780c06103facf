"""Daemon pieces that need no subprocess: start-up checks, topology report, dtype overrides."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.daemon import Daemon, DaemonConfig, check_start_topology, running_topology, topology_warnings
from inference.devices import resolve_device
from inference.runtime import Runtime, StopFlag, agree_flag
from tests.inference_fixtures import tiny_ckpt  # noqa: F401


def single_rank() -> Runtime:
    return Runtime(rank=0, world_size=1, local_rank=0, device=resolve_device("cpu"))


@pytest.mark.parametrize(
    "name,value,shown",
    [("ULYSSES_SIZE", 8, "ULYSSES_SIZE=8"), ("CFG_SIZE", 2, "CFG_SIZE=2"), ("DIT_FSDP", True, "DIT_FSDP=true"),
     ("VAE_PARALLEL", True, "VAE_PARALLEL=true"), ("T5_CPU", True, "T5_CPU=true")],
)
def test_unimplemented_start_switch_is_refused_by_name(settings, name, value, shown):
    setattr(settings, name, value)
    with pytest.raises(ValueError, match=shown):
        check_start_topology()


def test_default_switches_start(settings):
    check_start_topology()


def test_request_topology_that_differs_is_reported_once_per_field():
    topology = running_topology(Runtime(rank=0, world_size=4, local_rank=0, device=resolve_device("cpu")))
    assert topology["world_size"] == 4 and topology["replicas"] == 4 and topology["ulysses_size"] == 1
    warnings = topology_warnings(
        {"ulysses_size": 8, "cfg_size": 1, "dit_fsdp": True, "t5_fsdp": False, "vae_parallel": False,
         "use_attentioncache": True},
        topology,
    )
    assert len(warnings) == 3
    assert any("ulysses_size=8" in w for w in warnings) and any("dit_fsdp=True" in w for w in warnings)
    assert any("use_attentioncache" in w for w in warnings)


def test_matching_request_topology_has_no_warning():
    topology = running_topology(single_rank())
    assert topology_warnings({"ulysses_size": 1, "cfg_size": 1, "dit_fsdp": False}, topology) == []


def test_single_rank_agreement_is_the_local_flag():
    assert agree_flag(single_rank(), StopFlag.CANCEL) == StopFlag.CANCEL


def test_component_dtype_override_reaches_the_loaded_pipeline(settings, tiny_ckpt, tmp_path):  # noqa: F811
    settings.MODEL_DTYPES = {"transformer": "", "text_encoder": "", "vae": "bf16", "image_encoder": ""}
    config = DaemonConfig(
        worker_name="t", ckpt_dir=Path(tiny_ckpt), tiny_model=False, output_dir=tmp_path, media_root=tmp_path,
        lease_seconds=30, poll_seconds=1, idle_tick_seconds=1, task_timeout=60, fps=16,
    )
    daemon = Daemon(single_rank(), config)
    daemon.load_pipeline()
    assert daemon.pipe.vae.dtype == torch.bfloat16
    assert daemon.pipe.transformer.dtype == torch.float32
