"""The denoising loop: Wan2.1 I2V flow matching with classifier-free guidance."""
from __future__ import annotations

from typing import Callable

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from inference.parallel.cfg import Guidance, guided_prediction
from inference.parallel.context import ParallelContext
from inference.pipeline.components import WanComponents
from inference.pipeline.encode import Embeddings

# Called after every step: (steps done, steps in all). Raises to stop the job.
StepHook = Callable[[int, int], None]


def initial_noise(seed: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Gaussian latents from a CPU generator: the same seed gives the same video on any device
    and any number of ranks (every rank draws the same noise)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def denoise(
    components: WanComponents,
    scheduler: SchedulerMixin,
    *,
    latents: torch.Tensor,  # (1, 16, T, h, w) float32, pure noise
    condition: torch.Tensor,  # (1, 20, T, h, w) float32: mask + condition latents
    embeddings: Embeddings,
    guidance_scale: float,
    steps: int,
    ctx: ParallelContext,
    on_step: StepHook,
) -> torch.Tensor:
    """Run every step; returns the denoised latents (1, 16, T, h, w) float32."""
    transformer = components.transformer
    dtype = components.transformer_dtype
    guidance = Guidance(scale=guidance_scale, prompt=embeddings.prompt, negative=embeddings.negative)

    # 1. The schedule.
    scheduler.set_timesteps(steps, device=ctx.device.torch_device)
    timesteps = scheduler.timesteps
    total = len(timesteps)

    with torch.inference_mode():
        for index, t in enumerate(timesteps):
            # 2. The DiT sees the noisy latents beside the condition: 16 + 20 = 36 channels.
            model_input = torch.cat([latents, condition], dim=1).to(dtype)  # (1, 36, T, h, w)
            timestep = t.expand(latents.shape[0])

            def forward(text: torch.Tensor, pass_name: str) -> torch.Tensor:
                components.caches.position(index, pass_name)
                return transformer(
                    hidden_states=model_input,
                    timestep=timestep,
                    encoder_hidden_states=text,
                    encoder_hidden_states_image=embeddings.image,
                    return_dict=False,
                )[0]  # (1, 16, T, h, w) in the DiT's dtype

            # 3. Guided prediction (sequential or CFG-parallel), then one solver step.
            noise_pred = guided_prediction(forward, guidance, ctx)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
            on_step(index + 1, total)
    return latents
