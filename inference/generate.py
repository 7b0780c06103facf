"""Running one image-to-video job on an already-loaded pipeline.

The job goes through three phases, reported through ``on_phase`` as each starts:
"encoding" (UMT5 text and CLIP image embeddings), "denoising" (the DiT loop, reported per step
through ``on_step``) and "decoding" (the VAE, then conversion to uint8 frames).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import PIL.Image
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from inference.checkpoint import WanI2VPipeline
from inference.devices import DeviceSpec, synchronize
from videojobs.params import DEFAULT_NEGATIVE_PROMPT, SAMPLE_SOLVERS

# Wan2.1 encodes prompts to 512 UMT5 tokens (shared_config.text_len); diffusers'
# encode_prompt defaults to 226, which would silently truncate long prompts.
MAX_SEQUENCE_LENGTH = 512

# Spatial size must split into whole 2x2 patches of 8x-downsampled latents.
SIZE_MULTIPLE = 16
# The VAE compresses time by 4 and keeps the first frame on its own.
TEMPORAL_STRIDE = 4

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


@dataclass
class GenerationResult:
    frames: np.ndarray  # (F, H, W, 3) uint8
    timings: dict[str, float]  # seconds per phase: encoding, denoising, decoding


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
    if not np.isfinite(request.sample_shift) or request.sample_shift <= 0:
        raise ValueError(f"sample_shift must be a finite number > 0, got {request.sample_shift}")


def prepare_condition_image(image: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    """RGB, scaled to cover width x height with its aspect ratio kept, then centre-cropped to
    exactly that size. Squashing instead would distort the subject the video starts from."""
    # 1. Validate and drop alpha / palette modes.
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    rgb = image.convert("RGB")

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
    ships. A new instance per job because schedulers keep per-run state (step index, history).
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    num_train_timesteps = int(base_config.get("num_train_timesteps", 1000))
    if solver == "unipc":
        return UniPCMultistepScheduler(
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
        return DPMSolverMultistepScheduler(
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
        # Same shift formula, but diffusers spaces these sigmas from 1 down to about 1/1000
        # (shifted) rather than Wan's 1 .. 1/steps, so its last step starts nearer zero.
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    raise ValueError(f"unknown sample solver {solver!r}; allowed values: {', '.join(SAMPLE_SOLVERS)}")


# --------------------------------------------------------------------------- phases


@dataclass
class _Embeddings:
    prompt: torch.Tensor  # (1, 512, text_dim)
    negative: torch.Tensor | None  # (1, 512, text_dim); None without classifier-free guidance
    image: torch.Tensor  # (1, image_tokens, image_dim)


def _encode(
    pipe: WanImageToVideoPipeline, request: GenerationRequest, condition: PIL.Image.Image, device: DeviceSpec
) -> _Embeddings:
    # 1. Text. The negative prompt only matters under classifier-free guidance (scale > 1).
    use_cfg = request.guidance_scale > 1.0
    negative_text = request.negative_prompt or ""
    if not negative_text.strip():
        negative_text = DEFAULT_NEGATIVE_PROMPT
    prompt_embeds, negative_embeds = pipe.encode_prompt(
        prompt=request.prompt,
        negative_prompt=negative_text if use_cfg else None,
        do_classifier_free_guidance=use_cfg,
        num_videos_per_prompt=1,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        device=device.torch_device,
    )
    # 2. Image: CLIP's penultimate hidden states of the exact frame the video starts from.
    image_embeds = pipe.encode_image(condition, device=device.torch_device)
    return _Embeddings(prompt=prompt_embeds, negative=negative_embeds, image=image_embeds)


def _denoise(
    pipe: WanImageToVideoPipeline,
    request: GenerationRequest,
    condition: PIL.Image.Image,
    embeddings: _Embeddings,
    on_step: Callable[[int, int], None],
) -> torch.Tensor:
    # 1. Initial noise from a CPU generator: the same seed gives the same video on any device.
    generator = torch.Generator(device="cpu").manual_seed(request.seed)

    # 2. Progress after every step. Whatever on_step raises (cancellation) propagates out of
    # the pipeline unchanged; returning {} leaves the pipeline's tensors as they are.
    def step_end(_pipe: Any, step_index: int, _timestep: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
        on_step(step_index + 1, _pipe.num_timesteps)
        return {}

    # 3. The diffusers loop on precomputed embeddings; latents come back un-decoded.
    output = pipe(
        image=condition,
        prompt_embeds=embeddings.prompt,
        negative_prompt_embeds=embeddings.negative,
        image_embeds=embeddings.image,
        height=request.height,
        width=request.width,
        num_frames=request.num_frames,
        num_inference_steps=request.infer_steps,
        guidance_scale=request.guidance_scale,
        generator=generator,
        output_type="latent",
        return_dict=False,
        callback_on_step_end=step_end,
        callback_on_step_end_tensor_inputs=[],
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    return output[0]  # (1, 16, (F - 1) / 4 + 1, H / 8, W / 8) float32


def _decode(pipe: WanImageToVideoPipeline, latents: torch.Tensor) -> np.ndarray:
    vae = pipe.vae
    z_dim = vae.config.z_dim

    # 1. Undo the latent normalisation the DiT works in, in the VAE's dtype and in the same
    # form as the pipeline (divide by the reciprocal std), so results match it bit for bit.
    latents = latents.to(device=vae.device, dtype=vae.dtype)  # (1, z, T, h, w)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    mean = mean.to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    inv_std = inv_std.to(latents.device, latents.dtype)
    latents = latents / inv_std + mean

    # 2. Decode to pixels in [-1, 1], then to floats in [0, 1].
    video = vae.decode(latents, return_dict=False)[0]  # (1, 3, F, H, W)
    frames = pipe.video_processor.postprocess_video(video, output_type="np")  # (1, F, H, W, 3) float32

    # 3. uint8 for the encoder.
    frames = np.asarray(frames[0], dtype=np.float32)  # (F, H, W, 3)
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- entry point


def generate(
    pipe: WanImageToVideoPipeline,
    request: GenerationRequest,
    *,
    device: DeviceSpec,
    on_phase: Callable[[str], None],
    on_step: Callable[[int, int], None],
) -> GenerationResult:
    """Run one job and return its frames with per-phase wall-clock timings.

    ``pipe`` must come from ``inference.checkpoint.load_pipeline``. An exception raised by
    ``on_phase`` or ``on_step`` (for instance to cancel the job) stops generation and
    propagates unchanged.
    """
    # 1. Check everything before touching the models.
    validate_request(request)
    if not isinstance(pipe, WanI2VPipeline):
        raise TypeError(
            f"pipe must be loaded with inference.checkpoint.load_pipeline (a WanI2VPipeline), got {type(pipe).__name__}"
        )
    condition = prepare_condition_image(request.image, request.width, request.height)
    scheduler = make_scheduler(pipe.scheduler.config, request.sample_solver, request.sample_shift)

    timings: dict[str, float] = {}
    checkpoint_scheduler = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        with torch.inference_mode():
            # 2. Encoding.
            on_phase("encoding")
            started = time.perf_counter()
            embeddings = _encode(pipe, request, condition, device)
            synchronize(device)
            timings["encoding"] = time.perf_counter() - started

            # 3. Denoising.
            on_phase("denoising")
            started = time.perf_counter()
            latents = _denoise(pipe, request, condition, embeddings, on_step)
            synchronize(device)
            timings["denoising"] = time.perf_counter() - started

            # 4. Decoding.
            on_phase("decoding")
            started = time.perf_counter()
            frames = _decode(pipe, latents)
            timings["decoding"] = time.perf_counter() - started
    finally:
        # The next job builds its scheduler from the checkpoint's configuration again.
        pipe.scheduler = checkpoint_scheduler

    return GenerationResult(frames=frames, timings=timings)
