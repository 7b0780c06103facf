"""Regional compilation of the DiT (COMPILE=1), warmed up before the worker takes jobs.

diffusers' ``compile_repeated_blocks`` compiles the 40 identical transformer blocks once
instead of the whole model (figures.md: 1.13x at 480p on an H200, first call 17.8 s). The
first call of every new input shape pays the compilation, so the daemon runs one DiT pass per
configured shape (COMPILE_WARMUP) while the worker still reports "loading". Under sequence
parallel or FSDP the blocks hold collectives and hooks, so the graph may break there
(fullgraph only on one rank).
"""
from __future__ import annotations

import logging
import time

import torch
import torch._dynamo

from inference.cache.attention import REUSE, STORE
from inference.parallel.context import ParallelContext
from inference.pipeline.components import WanComponents

logger = logging.getLogger(__name__)


def parse_shape(text: str) -> tuple[int, int, int]:
    """"1280*720x81" -> (1280, 720, 81)."""
    size, _, frames = text.partition("x")
    width, _, height = size.partition("*")
    return int(width), int(height), int(frames)


def compile_and_warm_up(components: WanComponents, ctx: ParallelContext, shapes: list[tuple[int, int, int]]) -> None:
    # 1. Compile the repeated blocks (lazily: nothing happens until the first call). The blocks
    # have 7 variants (plain, and the attention cache's 3 per pass): room for them and a few
    # more before dynamo would fall back to eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
    transformer = components.transformer
    transformer.compile_repeated_blocks(fullgraph=not ctx.distributed)
    # 2. One pass per shape with inputs of the real shapes (every rank, in the same order).
    config = transformer.config
    dtype, device = components.transformer_dtype, ctx.device.torch_device
    vision = getattr(components.image_encoder, "config", None)
    image_tokens = (vision.image_size // vision.patch_size) ** 2 + 1 if vision is not None else 257  # ViT-H/14
    generator = torch.Generator().manual_seed(0)
    cache = components.caches.attention
    for width, height, frames in shapes:
        started = time.perf_counter()
        latent = (1, config.in_channels, (frames - 1) // 4 + 1, height // 8, width // 8)
        inputs = {
            "hidden_states": torch.randn(latent, generator=generator).to(device, dtype),
            "timestep": torch.tensor([999], device=device),
            "encoder_hidden_states": torch.randn(1, 512, config.text_dim, generator=generator).to(device, dtype),
            "encoder_hidden_states_image": torch.randn(1, image_tokens, config.image_dim, generator=generator).to(device, dtype),
        }
        # The plain blocks, then the attention cache's variants per pass: a store into the empty
        # cache, a store over a stored output, a reuse.
        with torch.inference_mode():
            transformer(**inputs, return_dict=False)
            for pass_name in ("cond", "uncond"):
                for action in (STORE, STORE, REUSE):
                    cache.force(action, pass_name)
                    transformer(**inputs, return_dict=False)
        cache.end()
        logger.info("compiled the DiT blocks for %dx%d, %d frames in %.1f s", width, height, frames,
                    time.perf_counter() - started)
