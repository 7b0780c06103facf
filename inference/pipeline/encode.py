"""The inputs of the denoising loop: text and image embeddings, and the VAE condition latents."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean

from inference.parallel.context import ParallelContext
from inference.parallel.vae import SPATIAL_STRIDE, Strips, split_rows
from inference.pipeline.components import WanComponents

# Wan2.1 encodes prompts to 512 UMT5 tokens (shared_config.text_len).
MAX_SEQUENCE_LENGTH = 512
# The VAE compresses time by 4 and keeps the first frame on its own.
TEMPORAL_STRIDE = 4

# Called between VAE chunks: (chunks done, chunks in all). Raises to stop the job.
ChunkHook = Callable[[int, int], None]


@dataclass
class Embeddings:
    prompt: torch.Tensor  # (1, 512, text_dim) in the DiT's dtype, on the device
    negative: torch.Tensor | None  # the same for the negative prompt; None without guidance
    image: torch.Tensor  # (1, image_tokens, image_dim) in the DiT's dtype


# --------------------------------------------------------------------------- text


def _t5(components: WanComponents, text: str, device: torch.device) -> torch.Tensor:
    """One prompt through UMT5, as diffusers' Wan pipelines do it: cleaned, padded to 512
    tokens, and the hidden states past the prompt's own tokens zeroed."""
    encoder = components.text_encoder
    tokens = components.tokenizer(
        [prompt_clean(text)], padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True,
        add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
    )
    length = int(tokens.attention_mask.gt(0).sum())
    hidden = encoder(tokens.input_ids.to(device), tokens.attention_mask.to(device)).last_hidden_state  # (1, 512, d)
    hidden = hidden.to(dtype=encoder.dtype)
    kept = hidden[0, :length]
    return torch.cat([kept, kept.new_zeros(MAX_SEQUENCE_LENGTH - length, kept.size(1))]).unsqueeze(0)


def encode_texts(components: WanComponents, texts: list[str], ctx: ParallelContext) -> list[torch.Tensor]:
    """UMT5 embeddings of each text, on this rank's device in the DiT's dtype.

    Texts in the prompt cache are not encoded again. With T5 on the CPU only rank 0 holds the
    encoder: it encodes on the host and broadcasts the embeddings. Otherwise every rank encodes
    (replicated, or together under FSDP)."""
    cache = components.prompts
    found = [cache.get(text) if cache is not None else None for text in texts]
    missing = [text for text, hit in zip(texts, found) if hit is None]
    encoded: list[torch.Tensor] = []
    if missing:
        with torch.inference_mode():
            if components.text_on_cpu:
                local = [_t5(components, text, torch.device("cpu")) for text in missing] if ctx.is_leader else None
                encoded = ctx.broadcast_tensors(local, count=len(missing))
            else:
                encoded = [_t5(components, text, ctx.device.torch_device) for text in missing]
        encoded = [e.to(dtype=components.transformer_dtype) for e in encoded]
        if cache is not None:
            for text, embeddings in zip(missing, encoded):
                cache.put(text, embeddings)
    fresh = iter(encoded)
    return [(hit if hit is not None else next(fresh)).to(device=ctx.device.torch_device, dtype=components.transformer_dtype)
            for hit in found]


# --------------------------------------------------------------------------- image


def frame_pixels(image: PIL.Image.Image, device: torch.device) -> torch.Tensor:
    """The condition frame as it is, in [-1, 1]: (1, 3, H, W) float32 on the device. The VAE
    encodes these pixels and CLIP sees them. The arithmetic is diffusers' VideoProcessor's
    (x / 255 in float32, then 2x - 1), without its rounding of the size to a multiple of 8."""
    unit = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).astype(np.float32) / 255.0)
    return (2.0 * unit.permute(2, 0, 1).unsqueeze(0) - 1.0).to(device=device)


def _clip_side(processor: Any) -> tuple[int, int]:
    """CLIP's input size, (height, width), from the checkpoint's image_processor config: the crop
    size when it crops, else the resize target (a square of the short side for shortest_edge)."""
    size = processor.crop_size if processor.do_center_crop else processor.size
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    return int(size["shortest_edge"]), int(size["shortest_edge"])


def clip_pixels(processor: Any, pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """CLIP's input, as Wan2.1 makes it (wan/modules/clip.py): the whole frame in [-1, 1],
    stretched to CLIP's size with torch bicubic interpolation (no crop, no aspect kept), mapped to
    [0, 1] and normalised with the checkpoint's mean and std. Only the processor's config is read:
    its own resize and centre crop would show CLIP the middle of the frame."""
    stretched = F.interpolate(pixels.to(torch.float32), size=_clip_side(processor), mode="bicubic", align_corners=False)
    unit = stretched * 0.5 + 0.5
    mean = torch.tensor(processor.image_mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    return ((unit - mean) / std).to(dtype=dtype)


def encode_image(components: WanComponents, image: PIL.Image.Image, ctx: ParallelContext) -> torch.Tensor:
    """CLIP's penultimate hidden states of the whole frame the video starts from. Every rank
    computes them alike from the same frame, so every topology gets the same embeddings."""
    encoder = components.image_encoder
    pixels = clip_pixels(components.image_processor, frame_pixels(image, encoder.device), encoder.dtype)
    hidden = encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]  # (1, tokens, image_dim)
    return hidden.to(device=ctx.device.torch_device, dtype=components.transformer_dtype)


# --------------------------------------------------------------------------- condition latents


def _vae_stats(vae: torch.nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent normalisation as (mean, 1 / std), shaped (1, z, 1, 1, 1), in the form diffusers uses."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    return mean, inv_std


def _encode_chunks(vae: torch.nn.Module, video: torch.Tensor, on_chunk: ChunkHook) -> torch.Tensor:
    """AutoencoderKLWan._encode, chunk by chunk (the first frame, then 4 at a time), with the
    hook between chunks. video (1, 3, F, H, W) -> moments (1, 2z, T, H/8, W/8)."""
    frames = video.shape[2]
    chunks = 1 + (frames - 1) // TEMPORAL_STRIDE
    vae.clear_cache()
    try:
        parts = []
        for index in range(chunks):
            vae._enc_conv_idx = [0]
            start = 0 if index == 0 else 1 + TEMPORAL_STRIDE * (index - 1)
            stop = 1 + TEMPORAL_STRIDE * index
            parts.append(vae.encoder(video[:, :, start:stop], feat_cache=vae._enc_feat_map, feat_idx=vae._enc_conv_idx))
            on_chunk(index + 1, chunks)
        return vae.quant_conv(torch.cat(parts, dim=2))
    finally:
        vae.clear_cache()


def condition_latents(
    components: WanComponents,
    image: PIL.Image.Image,
    num_frames: int,
    ctx: ParallelContext,
    strips: Strips | None,
    on_chunk: ChunkHook,
) -> torch.Tensor:
    """The 20 condition channels of every latent frame: 4 mask channels (1 on the first latent
    frame, which the image fixes) and the VAE latents of [image, zeros...]. -> (1, 20, T, h, w)."""
    vae = components.vae
    width, height = image.size
    device = ctx.device.torch_device
    # 1. The image in [-1, 1], followed by F - 1 black frames.
    pixels = frame_pixels(image, device).unsqueeze(2)  # (1, 3, 1, H, W)
    video = torch.cat([pixels, pixels.new_zeros(1, 3, num_frames - 1, height, width)], dim=2)
    video = video.to(device=vae.device, dtype=vae.dtype)

    # 2. Encode (this rank's rows under VAE parallel), keep the mean of the posterior.
    with torch.inference_mode():
        if strips is None:
            moments = _encode_chunks(vae, video, on_chunk)
        else:
            start, stop = strips.bounds(SPATIAL_STRIDE)
            with split_rows(vae.encoder, strips):
                local = _encode_chunks(vae, video[..., start:stop, :], on_chunk)
            moments = strips.gather_rows(local)
    latent = moments[:, : vae.config.z_dim].to(device=device, dtype=torch.float32)  # (1, z, T, h, w)
    mean, inv_std = _vae_stats(vae, latent)
    latent = (latent - mean) * inv_std

    # 3. The mask: which latent frames the condition fixes (only the first).
    mask = torch.zeros(1, TEMPORAL_STRIDE, *latent.shape[2:], dtype=latent.dtype, device=device)
    mask[:, :, 0] = 1.0
    return torch.cat([mask, latent], dim=1)

