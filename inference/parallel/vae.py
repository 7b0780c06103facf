"""VAE parallel: the encode of the condition frames and the decode of the latents, split into
horizontal strips, one per rank.

Each rank runs the VAE on its own rows of the latent (and the matching 8x rows of pixels).
Every spatial convolution first takes the rows it needs from its neighbours (a halo of one
row, exchanged point to point) instead of zero padding, so the strips compute exactly what
the whole frame computes; zero padding remains only at the image's own edges. The VAE's
self-attention blocks (one per frame, at the lowest resolution) attend over the whole frame:
their input rows are all-gathered, computed whole, and each rank keeps its rows. Every
rank does about 1/N of the convolution work; the encoded latent is all-gathered (every rank
needs the condition), the decoded frames go to rank 0 only.

Only the layers of the Wan2.1 VAE are known here; a VAE with another spatial layer is refused
rather than silently split wrong.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import WanAttentionBlock, WanCausalConv3d, WanResample

# Pixels per latent row (the VAE's spatial compression).
SPATIAL_STRIDE = 8


@dataclass(frozen=True)
class Strips:
    """Which latent rows each rank of ``group`` owns."""

    group: Any  # process group over every rank, on the tensor backend
    rank: int
    counts: tuple[int, ...]  # latent rows per rank, in rank order

    @classmethod
    def split(cls, rows: int, group: Any) -> "Strips":
        world = dist.get_world_size(group)
        if rows < world:
            raise ValueError(f"VAE parallel needs at least one latent row per rank: {rows} rows, {world} ranks")
        base, extra = divmod(rows, world)
        counts = tuple(base + (1 if r < extra else 0) for r in range(world))
        return cls(group=group, rank=dist.get_rank(group), counts=counts)

    @property
    def world(self) -> int:
        return len(self.counts)

    def bounds(self, scale: int = 1) -> tuple[int, int]:
        """[start, stop) of this rank's rows at ``scale`` rows per latent row."""
        start = sum(self.counts[: self.rank]) * scale
        return start, start + self.counts[self.rank] * scale

    def _scale_of(self, local: torch.Tensor) -> int:
        rows = local.shape[-2]
        if rows % self.counts[self.rank]:
            raise ValueError(f"{rows} local rows are not a multiple of this rank's {self.counts[self.rank]} latent rows")
        return rows // self.counts[self.rank]

    # --- exchanges ----------------------------------------------------------------------

    def pad_rows(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        """x (..., H, W) with `top` rows of the rank above and `bottom` rows of the rank below
        (zeros at the image's edges): (..., top + H + bottom, W)."""
        if min(top, bottom) < 0 or max(top, bottom) > x.shape[-2]:
            raise ValueError(f"halo of {top}/{bottom} rows needs at least that many local rows, have {x.shape[-2]}")
        rank, last = self.rank, self.world - 1
        peer = functools.partial(dist.get_global_rank, self.group)
        ops, above, below = [], None, None
        # 1. My last rows are the next rank's top halo; my first rows the previous rank's bottom.
        if top and rank < last:
            ops.append(dist.P2POp(dist.isend, x[..., x.shape[-2] - top :, :].contiguous(), peer(rank + 1), self.group))
        if bottom and rank > 0:
            ops.append(dist.P2POp(dist.isend, x[..., :bottom, :].contiguous(), peer(rank - 1), self.group))
        if top and rank > 0:
            above = x.new_empty(*x.shape[:-2], top, x.shape[-1])
            ops.append(dist.P2POp(dist.irecv, above, peer(rank - 1), self.group))
        if bottom and rank < last:
            below = x.new_empty(*x.shape[:-2], bottom, x.shape[-1])
            ops.append(dist.P2POp(dist.irecv, below, peer(rank + 1), self.group))
        if ops:
            for request in dist.batch_isend_irecv(ops):
                request.wait()
        # 2. The image's own edges keep the zero padding of the whole-frame computation.
        if above is None:
            above = x.new_zeros(*x.shape[:-2], top, x.shape[-1])
        if below is None:
            below = x.new_zeros(*x.shape[:-2], bottom, x.shape[-1])
        return torch.cat([above, x, below], dim=-2)

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of a (..., rows, W) tensor, whole, on every rank."""
        scale = self._scale_of(local)
        most = max(self.counts) * scale
        padded = F.pad(local, (0, 0, 0, most - local.shape[-2])).contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([part[..., : count * scale, :] for part, count in zip(parts, self.counts)], dim=-2)


def gather_frames_to_leader(frames: np.ndarray, strips: Strips, control_group: Any) -> np.ndarray | None:
    """(F, rows, W, 3) uint8 strips of every rank, stacked in row order, on rank 0 only.

    The frames travel on the CPU control channel: rank 0 writes them to disk from host memory,
    so the full video never occupies an accelerator."""
    local = torch.from_numpy(np.ascontiguousarray(frames))
    scale = local.shape[1] // strips.counts[strips.rank]
    most = max(strips.counts) * scale
    padded = F.pad(local, (0, 0, 0, 0, 0, most - local.shape[1])).contiguous()
    leader = strips.rank == 0
    parts = [torch.empty_like(padded) for _ in range(strips.world)] if leader else None
    dist.gather(padded, parts, dst=dist.get_global_rank(control_group, 0), group=control_group)
    if not leader:
        return None
    return torch.cat([p[:, : c * scale] for p, c in zip(parts, strips.counts)], dim=1).numpy()


# --------------------------------------------------------------------------- the layers


def _conv3d_with_halo(conv: WanCausalConv3d, strips: Strips, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    # WanCausalConv3d.forward, with the height padding taken from the neighbours.
    padding = list(conv._padding)  # (w, w, h, h, 2t, 0)
    if cache_x is not None and padding[4] > 0:
        x = torch.cat([cache_x.to(x.device), x], dim=2)
        padding[4] -= cache_x.shape[2]
    x = strips.pad_rows(x, padding[2], padding[3])
    padding[2] = padding[3] = 0
    return torch.nn.Conv3d.forward(conv, F.pad(x, padding))


def _conv2d_with_halo(conv: torch.nn.Conv2d, strips: Strips, x: torch.Tensor) -> torch.Tensor:
    # The 3x3, padding-1 convolution after each 2x upsampling.
    pad_h, pad_w = conv.padding
    x = strips.pad_rows(x, pad_h, pad_h)
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, (0, pad_w), conv.dilation, conv.groups)


def _downsample_with_halo(resample: torch.nn.Sequential, strips: Strips, x: torch.Tensor) -> torch.Tensor:
    # ZeroPad2d((0, 1, 0, 1)) then a stride-2 3x3 convolution: the bottom pad row is the next
    # rank's first row. Strip boundaries are even at every level (whole latent rows).
    pad, conv = resample[0], resample[1]
    left, right, top, bottom = pad.padding
    x = F.pad(x, (left, right, 0, 0))
    x = strips.pad_rows(x, top, bottom)
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _attention_over_all_rows(block: WanAttentionBlock, strips: Strips, x: torch.Tensor) -> torch.Tensor:
    scale = strips._scale_of(x)
    whole = WanAttentionBlock.forward(block, strips.gather_rows(x))
    start, stop = strips.bounds(scale)
    return whole[..., start:stop, :]


def _spatial_kernel(module: torch.nn.Module) -> bool:
    if isinstance(module, torch.nn.Conv3d):
        return module.kernel_size[1] > 1 or module.kernel_size[2] > 1
    if isinstance(module, torch.nn.Conv2d):
        return module.kernel_size[0] > 1 or module.kernel_size[1] > 1
    return False


@contextmanager
def split_rows(module: torch.nn.Module, strips: Strips) -> Iterator[None]:
    """While active, module (a Wan VAE encoder or decoder) computes on this rank's strip."""
    # 1. Swap the forward of every layer that looks across rows.
    swapped: list[torch.nn.Module] = []
    for layer in module.modules():
        if isinstance(layer, WanCausalConv3d) and _spatial_kernel(layer):
            target, forward = layer, functools.partial(_conv3d_with_halo, layer, strips)
        elif isinstance(layer, WanResample) and layer.mode in ("upsample2d", "upsample3d"):
            target, forward = layer.resample[1], functools.partial(_conv2d_with_halo, layer.resample[1], strips)
        elif isinstance(layer, WanResample) and layer.mode in ("downsample2d", "downsample3d"):
            target, forward = layer.resample, functools.partial(_downsample_with_halo, layer.resample, strips)
        elif isinstance(layer, WanAttentionBlock):
            target, forward = layer, functools.partial(_attention_over_all_rows, layer, strips)
        else:
            continue
        target.forward = forward
        swapped.append(target)
    try:
        # 2. Refuse a layer this module does not know how to split.
        covered = {id(m) for target in swapped for m in target.modules()}
        unknown = [type(m).__name__ for m in module.modules() if _spatial_kernel(m) and id(m) not in covered]
        if unknown:
            raise ValueError(f"VAE parallel cannot split {sorted(set(unknown))} layers; unset VAE_PARALLEL")
        yield
    finally:
        for target in swapped:
            del target.forward
