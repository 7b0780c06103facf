"""Daemon pieces that need no subprocess: topology report, warnings, dtype overrides."""
from __future__ import annotations

from pathlib import Path

import torch

from inference.daemon.config import DaemonConfig, requested_topology, running_topology
from inference.daemon.job import _generation_request
from inference.daemon.main import Daemon
from inference.daemon.outcome import topology_warnings
from inference.devices import resolve_device
from inference.parallel.context import ParallelContext
from inference.parallel.topology import Topology
from inference.runtime import Runtime, StopFlag, agree_flag


def single_rank() -> Runtime:
    return Runtime(rank=0, world_size=1, local_rank=0, device=resolve_device("cpu"))


def four_rank_context() -> ParallelContext:
    topology = Topology(world_size=4, ulysses_size=2, ring_size=1, cfg_size=2, dit_fsdp=True, t5_fsdp=False,
                        t5_cpu=True, vae_parallel=True)
    return ParallelContext(topology=topology, rank=0, device=resolve_device("cpu"))


def test_running_topology_reports_what_the_group_runs():
    topology = running_topology(four_rank_context(), attention_backend="native")
    assert topology == {
        "world_size": 4, "ulysses_size": 2, "ring_size": 1, "cfg_size": 2, "dit_fsdp": True, "t5_fsdp": False,
        "t5_cpu": True, "vae_parallel": True, "device": "cpu", "attention_backend": "native",
    }


def test_request_topology_that_differs_is_reported_once_per_field():
    topology = running_topology(four_rank_context(), attention_backend="native")
    warnings = topology_warnings(
        {"ulysses_size": 8, "cfg_size": 2, "dit_fsdp": True, "t5_fsdp": True, "vae_parallel": True,
         "use_attentioncache": True},
        topology,
    )
    assert len(warnings) == 2
    assert any("ulysses_size=8" in w and "ulysses_size=2" in w for w in warnings)
    assert any("t5_fsdp=True" in w for w in warnings)


def test_matching_request_topology_has_no_warning():
    topology = running_topology(ParallelContext.single(resolve_device("cpu")), attention_backend="native")
    assert topology_warnings({"ulysses_size": 1, "cfg_size": 1, "dit_fsdp": False}, topology) == []


def test_requested_topology_reads_the_settings(settings):
    settings.ULYSSES_SIZE, settings.RING_SIZE, settings.CFG_SIZE = None, 2, 2
    settings.DIT_FSDP, settings.T5_FSDP, settings.T5_CPU, settings.VAE_PARALLEL = True, False, True, True
    request = requested_topology()
    assert (request.ulysses_size, request.ring_size, request.cfg_size) == (None, 2, 2)
    assert (request.dit_fsdp, request.t5_fsdp, request.t5_cpu, request.vae_parallel) == (True, False, True, True)


def test_a_job_message_carries_its_cache_choice():
    from tests.conftest import png_bytes

    message = {"prompt": "p", "negative_prompt": "", "image_png": png_bytes(), "seed": 1, "params": {
        "image_size": "64*64", "num_frames": 9, "guidance_scale": 3.0, "infer_steps": 20, "sample_solver": "unipc",
        "sample_shift": 5.0, "use_attentioncache": True, "start_step": 2, "attentioncache_interval": 3, "end_step": 9}}
    request = _generation_request(message)
    assert (request.cache.method, request.cache.start_step, request.cache.interval, request.cache.end_step) == (
        "attention", 2, 3, 9)
    message["params"].update(cache_method="dbcache", cache_threshold=0.3, use_attentioncache=False)
    assert (_generation_request(message).cache.method, _generation_request(message).cache.threshold) == ("dbcache", 0.3)


def test_single_rank_agreement_is_the_local_flag():
    assert agree_flag(single_rank(), StopFlag.CANCEL) == StopFlag.CANCEL


def test_component_dtype_override_reaches_the_loaded_pipeline(settings, tiny_ckpt, tmp_path):  # noqa: F811
    settings.MODEL_DTYPES = {"transformer": "", "text_encoder": "", "vae": "bf16", "image_encoder": ""}
    config = DaemonConfig(
        worker_name="t", ckpt_dir=Path(tiny_ckpt), tiny_model=False, output_dir=tmp_path, media_root=tmp_path,
        lease_seconds=30, poll_seconds=1, idle_tick_seconds=1, task_timeout=60, fps=16,
    )
    daemon = Daemon(single_rank(), config, ParallelContext.single(resolve_device("cpu")))
    daemon.load_pipeline()
    assert daemon.components.vae.dtype == torch.bfloat16
    assert daemon.components.transformer.dtype == torch.float32
    assert daemon.topology["attention_backend"] == "native" and daemon.topology["world_size"] == 1
