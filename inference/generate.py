"""Running one image-to-video job on the loaded pipeline of one rank.

Every rank of a daemon group calls ``generate`` with the same request; the topology decides
what each rank computes. The job goes through three phases, announced through
``hooks.phase`` as each starts (every rank, at the same point, so a stop decided there
reaches all of them):

- "encoding": UMT5 text and CLIP image embeddings, and the VAE latents of the condition
  frames (``hooks.chunk`` between VAE chunks);
- "denoising": the DiT loop (``hooks.step`` after every step);
- "decoding": the VAE, latent frame by latent frame (``hooks.chunk``), then uint8 frames,
  which only rank 0 returns.

Whatever a hook raises (a cancel, a timeout, a shutdown) stops the job and propagates.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import PIL.Image
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from inference.cache.steps import CacheRequest, merge_reports
from inference.devices import synchronize
from inference.parallel.context import ParallelContext
from inference.parallel.topology import sequence_split_error
from inference.parallel.vae import SPATIAL_STRIDE, Strips
from inference.pipeline.components import WanComponents
from inference.pipeline.decode import decode_frames
from inference.pipeline.cost import dit_forwards, group_calls
from inference.pipeline.denoise import denoise, initial_noise
from inference.pipeline.distill import (
    StepDistillScheduler,
    denoising_step_list,
    distill_cache_warnings,
    distill_guidance,
)
from inference.pipeline.encode import TEMPORAL_STRIDE, Embeddings, condition_latents, encode_image, encode_texts
from inference.pipeline.schedule import WanDPMSolverScheduler, WanUniPCScheduler
from videojobs.params import ASPECT_DEFAULT, ASPECT_MODES, DEFAULT_NEGATIVE_PROMPT, DISTILL_SOLVER, SAMPLE_SOLVERS

# Spatial size must split into whole 2x2 patches of 8x-downsampled latents.
SIZE_MULTIPLE = 16

_SEED_MAX = 2**64 - 1


@dataclass
class GenerationRequest:
    prompt: str
    negative_prompt: str | None
    image: PIL.Image.Image
    width: int
    height: int
    num_frames: int
    guidance_scale: float
    infer_steps: int
    seed: int
    sample_solver: str
    sample_shift: float
    cache: CacheRequest = field(default_factory=CacheRequest)
    # "crop": the image covers width x height and is centre-cropped; "auto": the whole image is
    # resized to width x height, which the caller chose from its aspect ratio (params.output_size).
    aspect: str = ASPECT_DEFAULT
    loras: list[tuple[str, float]] = field(default_factory=list)  # (adapter name, scale), applied to the DiT


@dataclass
class GenerationResult:
    frames: np.ndarray | None  # (F, H, W, 3) uint8 on rank 0; None on the other ranks
    timings: dict[str, float]  # seconds per phase: encoding, denoising, decoding
    # What was skipped and how: the step cache's report, the attention backend, prompt-cache hits.
    acceleration: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    dit_forwards: int = 0  # the DiT forward passes that ran, over the whole group (inference.pipeline.cost)


def _ignore(*_args: Any) -> None:
    return None


@dataclass
class JobHooks:
    """Where a job reports and may be stopped. Every rank calls them at the same points."""

    phase: Callable[[str], None] = _ignore  # a phase starts
    step: Callable[[int, int], None] = _ignore  # (steps done, total) after every denoising step
    chunk: Callable[[str, int, int], None] = _ignore  # (phase, chunks done, total) between VAE chunks


# --------------------------------------------------------------------------- inputs


def validate_request(request: GenerationRequest) -> None:
    """Raise ValueError naming the first field the model cannot run with."""
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if request.negative_prompt is not None and not isinstance(request.negative_prompt, str):
        raise ValueError(f"negative_prompt must be a string or None, got {type(request.negative_prompt).__name__}")
    if not isinstance(request.image, PIL.Image.Image):
        raise ValueError(f"image must be a PIL.Image.Image, got {type(request.image).__name__}")
    for name, value in (("width", request.width), ("height", request.height)):
        if value <= 0 or value % SIZE_MULTIPLE != 0:
            raise ValueError(f"{name} must be a positive multiple of {SIZE_MULTIPLE}, got {value}")
    if request.num_frames < 1 or request.num_frames % TEMPORAL_STRIDE != 1:
        below = max(1, request.num_frames - (request.num_frames - 1) % TEMPORAL_STRIDE)
        raise ValueError(
            f"num_frames must be 4k+1 (e.g. {below} or {below + TEMPORAL_STRIDE}), got {request.num_frames}"
        )
    if request.infer_steps < 1:
        raise ValueError(f"infer_steps must be >= 1, got {request.infer_steps}")
    if not np.isfinite(request.guidance_scale) or request.guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {request.guidance_scale}")
    if not 0 <= request.seed <= _SEED_MAX:
        raise ValueError(f"seed must be in [0, 2**64 - 1], got {request.seed}")
    if request.sample_solver not in SAMPLE_SOLVERS:
        raise ValueError(f"sample_solver must be one of {', '.join(SAMPLE_SOLVERS)}, got {request.sample_solver!r}")
    if request.sample_solver == DISTILL_SOLVER:
        denoising_step_list(request.infer_steps)  # raises ValueError outside 1-8 steps
    if not np.isfinite(request.sample_shift) or request.sample_shift <= 0:
        raise ValueError(f"sample_shift must be a finite number > 0, got {request.sample_shift}")
    if request.aspect not in ASPECT_MODES:
        raise ValueError(f"aspect must be one of {', '.join(ASPECT_MODES)}, got {request.aspect!r}")


def prepare_condition_image(image: PIL.Image.Image, width: int, height: int, *,
                            aspect: str = ASPECT_DEFAULT) -> PIL.Image.Image:
    """RGB at exactly width x height. Under "crop": scaled to cover that size with its aspect
    ratio kept, then centre-cropped (squashing would distort the subject the video starts from).
    Under "auto": the whole image resized to that size, which params.output_size chose from the
    image's own ratio (as Wan2.1 does; the ratio moves by at most the rounding to 16 pixels)."""
    # 1. Validate and drop alpha / palette modes.
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    rgb = image.convert("RGB")
    if aspect == "auto":
        return rgb.resize((width, height), resample=PIL.Image.Resampling.LANCZOS)
    if aspect != "crop":
        raise ValueError(f"aspect must be one of {', '.join(ASPECT_MODES)}, got {aspect!r}")

    # 2. The smallest scale at which the image covers the target in both directions.
    scale = max(width / rgb.width, height / rgb.height)
    scaled_w = max(width, round(rgb.width * scale))
    scaled_h = max(height, round(rgb.height * scale))
    resized = rgb.resize((scaled_w, scaled_h), resample=PIL.Image.Resampling.LANCZOS)

    # 3. Centre crop; the box is (left, upper, right, lower).
    left = (scaled_w - width) // 2
    top = (scaled_h - height) // 2
    return resized.crop((left, top, left + width, top + height))


def make_scheduler(base_config: Mapping[str, Any], solver: str, shift: float) -> SchedulerMixin:
    """A fresh flow-matching scheduler for one job.

    Only num_train_timesteps is taken from the checkpoint's configuration; the rest follows
    Wan2.1's own samplers, so a solver means the same thing whatever scheduler the checkpoint
    ships: UniPC and DPM++ step on Wan's own sigma grids (inference/pipeline/schedule.py).
    A new instance per job because schedulers keep per-run state (step index, history).
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    num_train_timesteps = int(base_config.get("num_train_timesteps", 1000))
    if solver == "unipc":
        return WanUniPCScheduler(
            num_train_timesteps=num_train_timesteps,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
            solver_order=2,
            solver_type="bh2",
            predict_x0=True,
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    if solver == "dpm++":
        return WanDPMSolverScheduler(
            num_train_timesteps=num_train_timesteps,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    if solver == "euler":
        # Ours, not Wan's (Wan2.1 ships UniPC and DPM++ only): diffusers' flow Euler with the
        # same shift formula, its sigmas spaced from 1 down to about 1/1000 before the shift.
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    if solver == DISTILL_SOLVER:
        # LightX2V's step-distill semantics (inference/pipeline/distill.py): a step list, shifted
        # sigmas, Euler; the caller runs it without guidance.
        return StepDistillScheduler(shift=shift, num_train_timesteps=num_train_timesteps)
    raise ValueError(f"unknown sample solver {solver!r}; allowed values: {', '.join(SAMPLE_SOLVERS)}")


# --------------------------------------------------------------------------- the job


def latent_shape(request: GenerationRequest, channels: int) -> tuple[int, int, int, int, int]:
    """(1, channels, T, h, w) of a request's latents."""
    frames = (request.num_frames - 1) // TEMPORAL_STRIDE + 1
    return (1, channels, frames, request.height // SPATIAL_STRIDE, request.width // SPATIAL_STRIDE)


def check_fits_topology(request: GenerationRequest, components: WanComponents, ctx: ParallelContext) -> None:
    """Raise ValueError when the group cannot split this request's sizes."""
    _, _, frames, rows, cols = latent_shape(request, 1)
    patch = components.transformer.config.patch_size  # (t, h, w)
    tokens = (frames // patch[0]) * (rows // patch[1]) * (cols // patch[2])
    problem = sequence_split_error(ctx.topology, tokens=tokens)
    if problem is not None:
        raise ValueError(problem)
    if ctx.topology.vae_parallel and rows < ctx.topology.world_size:
        raise ValueError(
            f"VAE_PARALLEL splits the {rows} latent rows of a {request.height}-pixel-high video over "
            f"{ctx.topology.world_size} ranks; it needs at least one row per rank"
        )


def _timed(timings: dict[str, float], phase: str, ctx: ParallelContext, hooks: JobHooks, work: Callable[[], Any]) -> Any:
    hooks.phase(phase)
    started = time.perf_counter()
    result = work()
    synchronize(ctx.device)
    timings[phase] = time.perf_counter() - started
    return result


def _whole_group_report(report: dict[str, Any], ctx: ParallelContext) -> dict[str, Any]:
    """Under CFG parallel rank 0 only saw the conditional pass: unite every rank's report."""
    if not ctx.distributed or report.get("method", "none") == "none":
        return report
    everyone: list[Any] = [None] * ctx.topology.world_size
    torch.distributed.all_gather_object(everyone, report, group=ctx.control_group)
    return merge_reports(everyone)


def use_loras(components: WanComponents, loras: list[tuple[str, float]]) -> None:
    """The job's LoRA adapters and scales on the DiT, every other adapter off (ValueError for an
    adapter this daemon does not hold)."""
    if components.loras is None:
        if loras:
            raise ValueError(f"this daemon holds no LoRA adapters (LORA_DIR is empty); asked for "
                             f"{', '.join(name for name, _ in loras)}")
        return
    components.loras.activate(loras)


def _negative_text(request: GenerationRequest) -> str:
    text = request.negative_prompt or ""
    return text if text.strip() else DEFAULT_NEGATIVE_PROMPT


def generate(
    components: WanComponents, request: GenerationRequest, *, ctx: ParallelContext, hooks: JobHooks | None = None
) -> GenerationResult:
    """Run one job on this rank's part of the pipeline; frames and timings on rank 0."""
    # 1. Check everything before touching the models.
    hooks = hooks or JobHooks()
    validate_request(request)
    if not isinstance(components, WanComponents):
        raise TypeError(f"components must come from inference.pipeline.loading, got {type(components).__name__}")
    check_fits_topology(request, components, ctx)
    condition_image = prepare_condition_image(request.image, request.width, request.height, aspect=request.aspect)
    scheduler = make_scheduler(components.scheduler_config, request.sample_solver, request.sample_shift)
    # The distilled sampler runs without guidance: one DiT pass per step, a warning if one was asked.
    guidance_scale, warnings = distill_guidance(request.sample_solver, request.guidance_scale)
    use_loras(components, request.loras)
    strips = None
    if ctx.topology.vae_parallel:
        strips = Strips.split(request.height // SPATIAL_STRIDE, ctx.meshes.flat.get_group())
    timings: dict[str, float] = {}

    # 2. Encoding: the prompts (the negative one only under guidance), the image, the condition.
    def encode() -> tuple[Embeddings, torch.Tensor]:
        use_cfg = guidance_scale > 1.0
        texts = [request.prompt, _negative_text(request)] if use_cfg else [request.prompt]
        text = encode_texts(components, texts, ctx)
        embeddings = Embeddings(prompt=text[0], negative=text[1] if use_cfg else None,
                                image=encode_image(components, condition_image, ctx))
        condition = condition_latents(components, condition_image, request.num_frames, ctx, strips,
                                      lambda done, total: hooks.chunk("encoding", done, total))
        return embeddings, condition

    hits_before = components.prompts.hits if components.prompts is not None else 0
    with torch.inference_mode():
        embeddings, condition = _timed(timings, "encoding", ctx, hooks, encode)
        hits = (components.prompts.hits if components.prompts is not None else 0) - hits_before

        # 3. Denoising, with the job's step cache (empty at the start, cleared even after a stop).
        def run_loop() -> torch.Tensor:
            shape = latent_shape(request, components.vae.config.z_dim)
            noise = initial_noise(request.seed, shape, ctx.device.torch_device)
            return denoise(components, scheduler, latents=noise, condition=condition, embeddings=embeddings,
                           guidance_scale=guidance_scale, steps=request.infer_steps, ctx=ctx,
                           on_step=hooks.step)

        warnings += components.caches.begin(request.cache, request.infer_steps, guidance=guidance_scale > 1.0)
        try:
            latents = _timed(timings, "denoising", ctx, hooks, run_loop)
        finally:
            cache_report = components.caches.end()
        cache_report = _whole_group_report(cache_report, ctx)
        forwards = dit_forwards(group_calls(components.caches.calls, ctx, guidance=guidance_scale > 1.0), cache_report)
        warnings += distill_cache_warnings(request.sample_solver, cache_report, request.infer_steps)

        # 4. Decoding: frames on rank 0 only.
        def decode() -> np.ndarray | None:
            return decode_frames(components, latents, ctx, strips, lambda done, total: hooks.chunk("decoding", done, total))

        frames = _timed(timings, "decoding", ctx, hooks, decode)
    acceleration = {"cache": cache_report, "attention_backend": components.attention_backend,
                    "prompt_cache_hits": hits, "quantization": components.quantization,
                    "loras": [{"name": name, "scale": scale} for name, scale in request.loras]}
    return GenerationResult(frames=frames, timings=timings, acceleration=acceleration, warnings=warnings,
                            dit_forwards=forwards)
