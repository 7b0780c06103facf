"""Classifier-free guidance: the conditional and unconditional DiT passes of one step.

Sequentially (CFG_SIZE=1) every rank runs both passes. With CFG_SIZE=2 the mesh's cfg
dimension splits the group in two halves: half 0 runs the conditional pass and half 1 the
unconditional one, at the same time, each over its own sequence-parallel ranks. The two
predictions are then exchanged between the paired ranks (one all-gather over the cfg
dimension) and combined with exactly the sequential formula, so every rank holds the same
guided prediction and steps the same scheduler.

With guidance_scale <= 1 there is no unconditional pass. Both halves then run the
conditional pass (the same inputs give the same prediction on each): no rank waits on a
collective the other half never enters, which matters under FSDP, whose all-gathers span
the whole group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from inference.parallel.context import ParallelContext

# One DiT pass: text embeddings and the pass's name ("cond" or "uncond") in, the noise
# prediction out. The name keys the per-pass caches.
Forward = Callable[[torch.Tensor, str], torch.Tensor]


@dataclass(frozen=True)
class Guidance:
    scale: float
    prompt: torch.Tensor  # (1, 512, text_dim) on the device
    negative: torch.Tensor | None  # None when scale <= 1

    @property
    def enabled(self) -> bool:
        return self.scale > 1.0


def combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """The guided prediction, in the same expression and dtype as diffusers' Wan pipelines."""
    return uncond + scale * (cond - uncond)


def guided_prediction(forward: Forward, guidance: Guidance, ctx: ParallelContext) -> torch.Tensor:
    """The noise prediction of one denoising step on this rank (identical on every rank)."""
    # 1. Without guidance there is one pass; every half runs it.
    if not guidance.enabled:
        return forward(guidance.prompt, "cond")

    # 2. Sequential CFG: both passes here, conditional first (as diffusers orders them).
    if ctx.topology.cfg_size == 1:
        cond = forward(guidance.prompt, "cond")
        uncond = forward(guidance.negative, "uncond")
        return combine(cond, uncond, guidance.scale)

    # 3. CFG parallel: this half's pass, then the pair swaps predictions.
    half = ctx.meshes.cfg_rank
    if half == 0:
        mine = forward(guidance.prompt, "cond").contiguous()  # (1, C, T, h, w)
    else:
        mine = forward(guidance.negative, "uncond").contiguous()
    both = [torch.empty_like(mine) for _ in range(2)]
    dist.all_gather(both, mine, group=ctx.meshes.cfg_group)
    return combine(both[0], both[1], guidance.scale)
