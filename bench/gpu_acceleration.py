"""The acceleration options on the full-size Wan2.1-I2V-14B DiT (random weights), one accelerator.

Prepared for a lent H100/H200 (480p, 81 frames, CFG; sized for under 8 minutes on one H200;
random weights say nothing about visual quality, only about time and how far the latents move):

- attention backends side by side (seconds per step, eager): native SDPA, cuDNN, flash;
- no cache against the original's attention cache at its defaults (12/4/37 over 40 steps):
  the average over 40 steps comes from the measured seconds of a computed step and of a
  reusing step, weighted by the schedule (21 computed, 19 reused), plus the relative change of
  the final latents over a short run;
- the adaptive cache (dbcache at its default threshold) over --adaptive-steps steps;
- eager against compiled (COMPILE=1's regional compilation, warm-up excluded).

    python bench/gpu_acceleration.py                          # CUDA, the real sizes
    python bench/gpu_acceleration.py --tiny --device cpu      # the same code, tiny and quick

Targets from the issue (one H100/H200, 480p, CFG): fastest exact configuration <= 5.5 s/step,
default attention cache <= 4.5 s/step averaged over 40 steps.
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

from bench.gpu_dit_step import _sync, build  # noqa: E402
from inference.cache.attention import AttentionCachePlan  # noqa: E402
from inference.cache.steps import CacheRequest  # noqa: E402
from inference.devices import resolve_device  # noqa: E402
from inference.generate import make_scheduler  # noqa: E402
from inference.parallel.context import ParallelContext  # noqa: E402
from inference.pipeline.compile import compile_and_warm_up  # noqa: E402
from inference.pipeline.denoise import denoise, initial_noise  # noqa: E402
from inference.pipeline.encode import condition_latents  # noqa: E402


def run(args, spec, components, embeddings, image, cache: CacheRequest, steps: int) -> tuple[list[float], torch.Tensor]:
    """Step durations and final latents of one denoising run with this cache."""
    ctx = ParallelContext.single(spec)
    condition = condition_latents(components, image, args.frames, ctx, None, lambda done, total: None)
    noise = initial_noise(3, (1, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8), spec.torch_device)
    stamps = [_sync(spec)]
    components.caches.begin(cache, steps, guidance=True)
    try:
        latents = denoise(components, make_scheduler(components.scheduler_config, "unipc", 5.0), latents=noise,
                          condition=condition, embeddings=embeddings, guidance_scale=5.0, steps=steps, ctx=ctx,
                          on_step=lambda done, total: stamps.append(_sync(spec)))
    finally:
        components.caches.end()
    return [b - a for a, b in zip(stamps, stamps[1:])], latents


def relative_change(latents: torch.Tensor, reference: torch.Tensor) -> float:
    return float((latents.float() - reference.float()).norm() / reference.float().norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed run")
    parser.add_argument("--adaptive-steps", type=int, default=16)
    parser.add_argument("--backend", default="native")
    args = parser.parse_args()
    if args.tiny and args.width == 832:
        args.width, args.height, args.frames = 64, 48, 9
    spec = resolve_device(args.device)
    components, embeddings, image = build(args, spec)
    components.caches.adaptive = _adaptive(components, spec)
    report: dict = {"device": torch.cuda.get_device_name(spec.index) if spec.kind == "cuda" else spec.kind,
                    "config": "tiny" if args.tiny else "Wan2.1-I2V-14B", "size": f"{args.width}x{args.height}x{args.frames}"}
    with torch.inference_mode():
        # 1. Attention backends (each run's first step is a warm-up).
        backends = {}
        for backend in (["native"] if spec.kind == "cpu" else ["native", "_native_cudnn", "_native_flash"]):
            components.transformer.set_attention_backend(backend)
            durations, _ = run(args, spec, components, embeddings, image, CacheRequest(), args.steps + 1)
            backends[backend] = round(statistics.median(durations[1:]), 3)
        report["seconds_per_step_by_backend"] = backends
        fastest = min(backends, key=backends.get)
        components.transformer.set_attention_backend(fastest)
        # 2. No cache, and the attention cache's computed and reusing steps.
        plain, reference = run(args, spec, components, embeddings, image, CacheRequest(), args.steps + 1)
        cached_request = CacheRequest(method="attention", start_step=1, interval=args.steps, end_step=args.steps)
        cached, latents = run(args, spec, components, embeddings, image, cached_request, args.steps + 1)
        store, reuse = cached[1], statistics.median(cached[2:])
        plan = AttentionCachePlan(start_step=12, interval=4, end_step=37, steps=40)
        reused = plan.reused_steps
        report["no_cache_seconds_per_step"] = round(statistics.median(plain[1:]), 3)
        report["attention_cache_default_seconds_per_step_over_40"] = round(((40 - reused) * store + reused * reuse) / 40, 3)
        report["attention_cache_reusing_step_seconds"] = round(reuse, 3)
        report["attention_cache_relative_latent_change"] = relative_change(latents, reference)
        # 3. The adaptive cache.
        adaptive, latents = run(args, spec, components, embeddings, image, CacheRequest(method="dbcache"), args.adaptive_steps)
        _, reference = run(args, spec, components, embeddings, image, CacheRequest(), args.adaptive_steps)
        report["dbcache_seconds_per_step"] = round(statistics.mean(adaptive), 3)
        report["dbcache_relative_latent_change"] = relative_change(latents, reference)
        # 4. Compiled (warm-up excluded).
        started = time.perf_counter()
        compile_and_warm_up(components, ParallelContext.single(spec), [(args.width, args.height, args.frames)])
        report["compile_warmup_seconds"] = round(time.perf_counter() - started, 1)
        compiled, _ = run(args, spec, components, embeddings, image, CacheRequest(), args.steps + 1)
        report["compiled_seconds_per_step"] = round(statistics.median(compiled[1:]), 3)
    report["fastest_backend"] = fastest
    print(json.dumps(report))


def _adaptive(components, spec):
    from inference.cache.adaptive import AdaptiveCache

    return AdaptiveCache(components.transformer, ParallelContext.single(spec))


if __name__ == "__main__":
    main()
