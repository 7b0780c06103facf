"""Latents to uint8 frames, latent frame by latent frame."""
from __future__ import annotations

import numpy as np
import torch
from diffusers.video_processor import VideoProcessor

from inference.parallel.context import ParallelContext
from inference.parallel.vae import SPATIAL_STRIDE, Strips, gather_frames_to_leader, split_rows
from inference.pipeline.components import WanComponents
from inference.pipeline.encode import ChunkHook, _vae_stats


def _decode_chunks(vae: torch.nn.Module, z: torch.Tensor, on_chunk: ChunkHook) -> torch.Tensor:
    """AutoencoderKLWan._decode one latent frame at a time, with the hook between frames.
    z (1, z, T, h, w) in the VAE's dtype -> video (1, 3, F, 8h, 8w) in [-1, 1]."""
    frames = z.shape[2]
    vae.clear_cache()
    try:
        x = vae.post_quant_conv(z)
        parts = []
        for index in range(frames):
            vae._conv_idx = [0]
            parts.append(
                vae.decoder(x[:, :, index : index + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                            first_chunk=index == 0)
            )
            on_chunk(index + 1, frames)
        return torch.clamp(torch.cat(parts, dim=2), min=-1.0, max=1.0)
    finally:
        vae.clear_cache()


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8, through diffusers' own post-processing."""
    frames = VideoProcessor(vae_scale_factor=SPATIAL_STRIDE).postprocess_video(video, output_type="np")
    frames = np.asarray(frames[0], dtype=np.float32)  # (F, H, W, 3) in [0, 1]
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def decode_frames(
    components: WanComponents,
    latents: torch.Tensor,  # (1, 16, T, h, w) float32, as the DiT works in them
    ctx: ParallelContext,
    strips: Strips | None,
    on_chunk: ChunkHook,
) -> np.ndarray | None:
    """The video's frames (F, H, W, 3) uint8 on rank 0; None on the other ranks."""
    vae = components.vae
    # 1. Undo the latent normalisation, in the VAE's dtype (as diffusers does, bit for bit).
    z = latents.to(device=vae.device, dtype=vae.dtype)
    mean, inv_std = _vae_stats(vae, z)
    z = z / inv_std + mean

    with torch.inference_mode():
        # 2. Without VAE parallel rank 0 decodes the whole frame; the other ranks only keep in
        # step with its stop decisions, chunk for chunk.
        if strips is None:
            if ctx.is_leader:
                return _to_uint8(_decode_chunks(vae, z, on_chunk))
            for index in range(z.shape[2]):
                on_chunk(index + 1, z.shape[2])
            return None
        # 3. VAE parallel: this rank's rows, then every strip to rank 0 over the host.
        start, stop = strips.bounds()
        with split_rows(vae.decoder, strips):
            local = _to_uint8(_decode_chunks(vae, z[..., start:stop, :], on_chunk))
        return gather_frames_to_leader(local, strips, ctx.control_group)
