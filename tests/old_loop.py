"""The generation path this project had before it owned its denoising loop (commit 424729c):
diffusers' pipeline call with precomputed embeddings and a step callback, then our decode.
Kept only as the reference that tests/test_inference_generate.py compares the new loop to.
Its scheduler comes from make_scheduler, so the pipeline's set_timesteps call lays out the
official Wan2.1 sigma grid (issue 19) as our loop does: the comparison is of the stepping.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import WanImageToVideoPipeline

from inference.generate import GenerationRequest, make_scheduler, prepare_condition_image
from inference.pipeline.encode import clip_pixels, frame_pixels
from videojobs.params import DEFAULT_NEGATIVE_PROMPT


class WanI2VPipeline(WanImageToVideoPipeline):
    """Upstream check_inputs refuses `image` with `image_embeds`, yet __call__ needs the image for
    the VAE condition; the old path validated the image itself and passed both."""

    def check_inputs(self, prompt, negative_prompt, image, height, width, prompt_embeds=None,
                     negative_prompt_embeds=None, image_embeds=None, callback_on_step_end_tensor_inputs=None,
                     guidance_scale_2=None) -> None:
        if image_embeds is not None:
            assert isinstance(image, (PIL.Image.Image, torch.Tensor))
            image = None
        super().check_inputs(prompt, negative_prompt, image, height, width, prompt_embeds=prompt_embeds,
                             negative_prompt_embeds=negative_prompt_embeds, image_embeds=image_embeds,
                             callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
                             guidance_scale_2=guidance_scale_2)


def old_generate(components: dict[str, Any], request: GenerationRequest, steps: list[int]) -> np.ndarray:
    pipe = WanI2VPipeline(**components, boundary_ratio=None, expand_timesteps=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(pipe.scheduler.config, request.sample_solver, request.sample_shift)
    condition = prepare_condition_image(request.image, request.width, request.height)
    device = torch.device("cpu")
    with torch.inference_mode():
        # 1. Encoding, as the old _encode did.
        use_cfg = request.guidance_scale > 1.0
        negative = request.negative_prompt or ""
        negative = negative if negative.strip() else DEFAULT_NEGATIVE_PROMPT
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=request.prompt, negative_prompt=negative if use_cfg else None, do_classifier_free_guidance=use_cfg,
            num_videos_per_prompt=1, max_sequence_length=512, device=device,
        )
        # CLIP sees the whole frame stretched the Wan way (issue 19), not diffusers' centre crop.
        clip_input = clip_pixels(pipe.image_processor, frame_pixels(condition, device), pipe.image_encoder.dtype)
        image_embeds = pipe.image_encoder(pixel_values=clip_input, output_hidden_states=True).hidden_states[-2]

        # 2. The diffusers loop, latents out.
        def step_end(_pipe, index, _t, _tensors):
            steps.append(index + 1)
            return {}

        latents = pipe(
            image=condition, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds,
            image_embeds=image_embeds, height=request.height, width=request.width, num_frames=request.num_frames,
            num_inference_steps=request.infer_steps, guidance_scale=request.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(request.seed), output_type="latent", return_dict=False,
            callback_on_step_end=step_end, callback_on_step_end_tensor_inputs=[], max_sequence_length=512,
        )[0]

        # 3. The old _decode.
        vae = pipe.vae
        z_dim = vae.config.z_dim
        latents = latents.to(device=vae.device, dtype=vae.dtype)
        mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
        latents = latents / inv_std.to(latents.device, latents.dtype) + mean
        video = vae.decode(latents, return_dict=False)[0]
        frames = pipe.video_processor.postprocess_video(video, output_type="np")
    frames = np.asarray(frames[0], dtype=np.float32)
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
