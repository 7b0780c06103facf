"""Run one generation per topology on a group of ranks, without the service or its database.

    torchrun --nproc_per_node=4 -m inference.trial --ckpt DIR --out DIR \\
        --case u2cfg2:ULYSSES_SIZE=2,CFG_SIZE=2,DIT_FSDP=1 [--case ...] [--width 64 --height 80 ...]

Each case loads the pipeline afresh with its own topology (same world), runs the same request
and seed, and rank 0 writes ``<out>/<case>.npy`` (the uint8 frames) and ``<out>/<case>.json``
(timings, per-rank parameter bytes and, with --count-bytes, bytes sent per denoising step and per phase). An
operator can run it on new hardware to check a topology before serving with it; the parity
tests and ``bench/`` run it on the CPU with gloo.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.distributed as dist

from inference.cache.steps import CacheRequest
from inference.generate import GenerationRequest, JobHooks, generate
from inference.parallel.context import ParallelContext
from inference.parallel.topology import TopologyRequest, build_meshes, resolve_topology
from inference.parallel.traffic import TrafficMeter
from inference.pipeline.loading import LoadOptions, load_components
from inference.runtime import init_runtime, shutdown_runtime
from videojobs import params as P

_SWITCHES = {
    "ULYSSES_SIZE": ("ulysses_size", int),
    "RING_SIZE": ("ring_size", int),
    "CFG_SIZE": ("cfg_size", int),
    "DIT_FSDP": ("dit_fsdp", lambda v: v.lower() in ("1", "true", "yes")),
    "T5_FSDP": ("t5_fsdp", lambda v: v.lower() in ("1", "true", "yes")),
    "T5_CPU": ("t5_cpu", lambda v: v.lower() in ("1", "true", "yes")),
    "VAE_PARALLEL": ("vae_parallel", lambda v: v.lower() in ("1", "true", "yes")),
}


def parse_case(text: str) -> tuple[str, TopologyRequest]:
    """"name:ULYSSES_SIZE=2,CFG_SIZE=2" -> (name, request); unnamed switches keep their defaults."""
    name, _, spec = text.partition(":")
    fields: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in _SWITCHES:
            raise ValueError(f"unknown switch {key!r} in case {name!r}; known: {', '.join(_SWITCHES)}")
        field, convert = _SWITCHES[key]
        fields[field] = convert(value)
    return name, TopologyRequest(**fields)


def sample_image(width: int, height: int) -> PIL.Image.Image:
    """A deterministic noise picture of another size than the output (so it is resized)."""
    pixels = np.random.default_rng(7).integers(0, 256, size=(height + 16, width + 40, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels, mode="RGB")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--case", action="append", required=True, help="name:SWITCH=VALUE,...")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=80)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--solver", default="unipc", choices=P.SAMPLE_SOLVERS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--count-bytes", action="store_true", help="count bytes handed to collectives per step")
    parser.add_argument("--cache-method", default="none", choices=P.CACHE_METHODS)
    parser.add_argument("--cache-start", type=int, default=P.ATTENTIONCACHE_DEFAULTS["start_step"])
    parser.add_argument("--cache-interval", type=int, default=P.ATTENTIONCACHE_DEFAULTS["attentioncache_interval"])
    parser.add_argument("--cache-end", type=int, default=P.ATTENTIONCACHE_DEFAULTS["end_step"])
    parser.add_argument("--cache-threshold", type=float, default=P.CACHE_THRESHOLD_DEFAULT)
    parser.add_argument("--dit-quant", default="none", help="DIT_QUANT: none, fp8, int8")
    parser.add_argument("--t5-quant", default="none", help="T5_QUANT: none, int8")
    return parser.parse_args()


def run_case(name: str, request: TopologyRequest, args: argparse.Namespace, runtime: Any) -> dict[str, Any]:
    """Load with this topology, generate once; returns the report (frames saved by rank 0)."""
    # 1. The topology and its meshes.
    heads = json.loads((args.ckpt / "transformer" / "config.json").read_text())["num_attention_heads"]
    topology, _ = resolve_topology(request, world_size=runtime.world_size, num_heads=heads, device_kind=runtime.device.kind)
    ctx = ParallelContext(topology=topology, rank=runtime.rank, device=runtime.device,
                          meshes=build_meshes(topology, runtime.device.kind), control_group=runtime.control_group)
    # 2. The pipeline, then one job; the meter counts what the denoising steps send.
    components = load_components(LoadOptions(ckpt_dir=args.ckpt, device=runtime.device, dit_quant=args.dit_quant,
                                             t5_quant=args.t5_quant), ctx)
    job = GenerationRequest(
        prompt="a cat walks across a sunny garden", negative_prompt=None, image=sample_image(args.width, args.height),
        width=args.width, height=args.height, num_frames=args.frames, guidance_scale=args.guidance,
        infer_steps=args.steps, seed=args.seed, sample_solver=args.solver, sample_shift=5.0,
        cache=CacheRequest(method=args.cache_method, start_step=args.cache_start, interval=args.cache_interval,
                           end_step=args.cache_end, threshold=args.cache_threshold),
    )
    meter = TrafficMeter(enabled=args.count_bytes)
    hooks = JobHooks(phase=meter.phase)
    with meter:
        result = generate(components, job, ctx=ctx, hooks=hooks)
    # 3. What every rank held and sent, gathered on rank 0.
    mine = {"rank": runtime.rank, "held_bytes": components.held_bytes, "traffic": meter.report(args.steps),
            "cache": result.acceleration["cache"]}
    everyone: list[Any] = [None] * runtime.world_size
    if runtime.distributed:
        dist.all_gather_object(everyone, mine, group=runtime.control_group)
    else:
        everyone = [mine]
    if runtime.is_leader:
        args.out.mkdir(parents=True, exist_ok=True)
        np.save(args.out / f"{name}.npy", result.frames)
        report = {"case": name, "topology": topology.as_dict(), "timings": result.timings, "ranks": everyone,
                  "acceleration": result.acceleration, "dit_forwards": result.dit_forwards, "warnings": result.warnings,
                  "request": {"width": args.width, "height": args.height, "frames": args.frames, "steps": args.steps,
                              "guidance": args.guidance, "solver": args.solver}}
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    return mine


def main() -> None:
    args = _arguments()
    cases = [parse_case(text) for text in args.case]
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    runtime = init_runtime(device=args.device, timeout_seconds=600)
    try:
        for name, request in cases:
            run_case(name, request, args, runtime)
            if runtime.distributed:
                dist.barrier(group=runtime.control_group)
    finally:
        shutdown_runtime(runtime)


if __name__ == "__main__":
    main()
