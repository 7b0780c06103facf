"""The 4-step distilled sampler against the 40-step CFG recipe on the full-size Wan2.1-I2V-14B
DiT (random bf16 weights, no download), at 480P and 720P, 81 frames, on 1 rank and on all ranks.

Prepared for a lent NVIDIA H100/H200 node; not run in development (no accelerator there).
What it times is the denoising loop (``inference.pipeline.denoise``, the same code a job runs):
text/image embeddings and the condition latents are random tensors of the real shapes, so T5,
CLIP and the VAE are left out (figures.md has their times; LightX2V's figures include them).

- distill: all --distill-steps steps (4 by default, one DiT pass each), s/step and s/job;
- cfg: UniPC with guidance (two DiT passes per step), --cfg-measure steps timed, and s/job
  projected to --cfg-steps (40) from the median step: 40 real steps at 720P on one GPU take
  about 16 minutes, more than one device call may run.

Compare against LightX2V's published figures on one H200, 81 frames: the official 40-step run
974 s (720P); their 4-step distilled run 44 s (720P) and 14 s (480P), whole jobs.

    python bench/gpu_distill.py                                  # 1 rank
    torchrun --nproc_per_node=8 bench/gpu_distill.py             # all ranks: Ulysses 8 (+ --cfg-size 2)
    python bench/gpu_distill.py --tiny --device cpu              # the same code, tiny, to check it
    torchrun --nproc_per_node=2 bench/gpu_distill.py --tiny --device cpu

Under --cfg-size 2 a distilled job gains nothing from the second half (no unconditional pass to
run there): README "Fast generation" says which topology to serve distilled jobs with.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.gpu_dit_step import TINY, WAN_14B, random_dit  # noqa: E402
from inference.cache.steps import StepCaches  # noqa: E402
from inference.devices import synchronize  # noqa: E402
from inference.generate import make_scheduler  # noqa: E402
from inference.parallel.context import ParallelContext  # noqa: E402
from inference.parallel.sequence import enable_sequence_parallel  # noqa: E402
from inference.parallel.topology import TopologyRequest, build_meshes, resolve_topology  # noqa: E402
from inference.pipeline.components import WanComponents  # noqa: E402
from inference.pipeline.denoise import denoise, initial_noise  # noqa: E402
from inference.pipeline.encode import Embeddings  # noqa: E402
from inference.runtime import init_runtime, shutdown_runtime  # noqa: E402

SIZES = {"480p": (832, 480), "720p": (1280, 720)}
TINY_SIZES = {"480p": (64, 48), "720p": (96, 64)}  # --tiny: the same code at sizes a CPU runs


def _context(runtime, args, heads: int) -> ParallelContext:
    request = TopologyRequest(cfg_size=args.cfg_size)  # the sequence split takes the rest of the group
    topology, _ = resolve_topology(request, world_size=runtime.world_size, num_heads=heads,
                                   device_kind=runtime.device.kind)
    meshes = build_meshes(topology, runtime.device.kind) if runtime.distributed else None
    return ParallelContext(topology=topology, rank=runtime.rank, device=runtime.device, meshes=meshes,
                           control_group=runtime.control_group)


def _inputs(config, ctx: ParallelContext, width: int, height: int, frames: int, dtype: torch.dtype):
    """Random embeddings and condition latents of the real shapes (the same on every rank)."""
    device, generator = ctx.device.torch_device, torch.Generator().manual_seed(1)
    prompt, negative = (torch.randn(1, 512, config.text_dim, generator=generator).to(device, dtype) for _ in range(2))
    image = torch.randn(1, 257, config.image_dim, generator=generator).to(device, dtype)
    latent_frames = (frames - 1) // 4 + 1
    condition = torch.randn(1, 20, latent_frames, height // 8, width // 8, generator=generator).to(device)
    noise = initial_noise(3, (1, 16, latent_frames, height // 8, width // 8), device)
    return Embeddings(prompt=prompt, negative=negative, image=image), condition, noise


def _timed_run(components, ctx, solver: str, guidance: float, steps: int, embeddings, condition, noise
               ) -> tuple[list[float], int]:
    """Seconds of each denoising step (every rank; synchronised after each), and this rank's DiT calls."""
    stamps: list[float] = []
    components.caches.calls = {}  # counted by the loop before every DiT call

    def on_step(done: int, total: int) -> None:
        synchronize(ctx.device)
        stamps.append(time.perf_counter())

    synchronize(ctx.device)
    stamps.append(time.perf_counter())
    scheduler = make_scheduler(components.scheduler_config, solver, 5.0)
    denoise(components, scheduler, latents=noise, condition=condition, embeddings=embeddings, guidance_scale=guidance,
            steps=steps, ctx=ctx, on_step=on_step)
    return [b - a for a, b in zip(stamps, stamps[1:])], sum(components.caches.calls.values())


def measure(components, ctx, args, size: str) -> dict:
    width, height = (TINY_SIZES if args.tiny else SIZES)[size]
    embeddings, condition, noise = _inputs(components.transformer.config, ctx, width, height, args.frames,
                                           components.transformer_dtype)
    with torch.inference_mode():
        _timed_run(components, ctx, "distill", 1.0, 1, embeddings, condition, noise)  # warm-up
        distill, distill_calls = _timed_run(components, ctx, "distill", 1.0, args.distill_steps, embeddings,
                                            condition, noise)
        # UniPC's grid needs >= 2 steps; the job's 40 steps are projected from the measured ones.
        cfg, cfg_calls = _timed_run(components, ctx, "unipc", 5.0, max(2, args.cfg_measure), embeddings, condition,
                                    noise)
    cfg_step = statistics.median(cfg)
    return {
        "size": f"{width}*{height}", "frames": args.frames,
        "distill": {"steps": args.distill_steps, "dit_calls_on_this_rank": distill_calls,
                    "seconds_per_step": round(statistics.median(distill), 3), "seconds_per_job": round(sum(distill), 2)},
        "cfg": {"steps": args.cfg_steps, "measured_steps": len(cfg),
                "dit_calls_on_this_rank_per_step": cfg_calls / len(cfg),
                "seconds_per_step": round(cfg_step, 3), "seconds_per_job_projected": round(cfg_step * args.cfg_steps, 1)},
        "ratio_per_job": round(cfg_step * args.cfg_steps / sum(distill), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny config (to check the script on a CPU)")
    parser.add_argument("--sizes", default="480p,720p")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--distill-steps", type=int, default=4)
    parser.add_argument("--cfg-steps", type=int, default=40, help="the CFG job's steps (projected)")
    parser.add_argument("--cfg-measure", type=int, default=3, help="CFG steps actually timed")
    parser.add_argument("--cfg-size", type=int, default=1, help="CFG_SIZE of the all-ranks topology")
    args = parser.parse_args()
    if args.tiny and args.frames == 81:
        args.frames = 9
    runtime = init_runtime(device=args.device, timeout_seconds=1800)
    try:
        config = TINY if args.tiny else WAN_14B
        ctx = _context(runtime, args, config["num_attention_heads"])
        dtype = torch.float32 if runtime.device.kind == "cpu" else torch.bfloat16
        started = time.perf_counter()
        dit = random_dit(config, runtime.device.torch_device, dtype)  # same seed: the same weights on every rank
        # The attention backend the daemon would pick (AUTO), and the sequence split when there is one.
        backend = enable_sequence_parallel(dit, ctx.topology, ctx.meshes, runtime.device.kind)
        components = WanComponents(tokenizer=None, text_encoder=None, image_processor=None, image_encoder=None,
                                   vae=None, transformer=dit, scheduler_config={"num_train_timesteps": 1000},
                                   caches=StepCaches(dit))
        build_seconds = time.perf_counter() - started
        results = [measure(components, ctx, args, size) for size in args.sizes.split(",")]
        if runtime.is_leader:
            device = torch.cuda.get_device_name(runtime.device.index) if runtime.device.kind == "cuda" else "cpu"
            print(json.dumps({
                "device": device, "ranks": runtime.world_size, "topology": ctx.topology.as_dict(),
                "config": "tiny" if args.tiny else "Wan2.1-I2V-14B (random bf16 weights)", "attention": backend,
                "build_seconds": round(build_seconds, 1), "results": results,
                "peak_device_gib": round(torch.cuda.max_memory_allocated(runtime.device.index) / 2**30, 1)
                if runtime.device.kind == "cuda" else None,
                "lightx2v_h200_seconds_per_job": {"720p_40_step_official": 974, "720p_distill_4": 44, "480p_distill_4": 14},
            }, indent=1))
    finally:
        shutdown_runtime(runtime)


if __name__ == "__main__":
    main()
