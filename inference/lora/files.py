"""LoRA files in LORA_DIR: which ones, in which key format, converted by diffusers.

Every ``*.safetensors`` file in the folder is one adapter named by its file stem. Three key
formats are accepted, and diffusers' own Wan LoRA loading (``WanLoraLoaderMixin.lora_state_dict``)
converts all of them to the diffusers/peft form (``transformer.blocks.N.attn1.to_q.lora_A.weight``),
folding each module's ``alpha / rank`` into the weights:

| format | example key |
|---|---|
| ``wan`` (LightX2V, original Wan) | ``diffusion_model.blocks.0.self_attn.q.lora_down.weight`` (+ ``lora_up``, ``alpha``) |
| ``peft`` (diffusers) | ``transformer.blocks.0.attn1.to_q.lora_A.weight`` (+ ``lora_B``) |
| ``kohya`` (kohya / musubi-tuner, ComfyUI) | ``lora_unet_blocks_0_self_attn_q.lora_down.weight`` (+ ``alpha``) |
"""
from __future__ import annotations

import hashlib
import logging
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from videojobs.params import LORA_NAME_PATTERN

logger = logging.getLogger(__name__)

# A name travels in requests and URLs: letters, digits, '.', '_', '-' (no path separators).
NAME_PATTERN = re.compile(LORA_NAME_PATTERN)
FORMATS: tuple[str, ...] = ("wan", "peft", "kohya")
SHA256_SHORT = 12  # hex characters shown of each file's sha256


@dataclass
class AdapterFile:
    """One adapter as read from disk: its identity, and its weights in diffusers' peft form."""

    name: str
    path: Path
    format: str  # one of FORMATS
    rank: int  # the largest rank among its modules
    size_bytes: int  # of the file
    sha256: str  # short hex digest of the file
    state_dict: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    # diffusers' adapter metadata (its peft LoraConfig: r, lora_alpha, ...) when the file carries it
    metadata: dict[str, Any] | None = field(repr=False, default=None)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "format": self.format, "rank": self.rank, "size_bytes": self.size_bytes,
                "sha256": self.sha256}


def key_format(keys: list[str]) -> str:
    """Which of FORMATS a LoRA file's keys are in; ValueError when none."""
    if any(key.startswith("diffusion_model.") for key in keys):
        return "wan"
    if any(key.startswith("lora_unet_") for key in keys):
        return "kohya"
    if keys and all(".lora_A." in key or ".lora_B." in key for key in keys):
        return "peft"
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    raise ValueError(f"unrecognised LoRA key format (first keys: {sample}); accepted: Wan/LightX2V "
                     "'diffusion_model.…lora_down/lora_up/alpha', peft 'transformer.…lora_A/lora_B', "
                     "kohya 'lora_unet_…lora_down/lora_up/alpha'")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:SHA256_SHORT]


def convert(source: dict[str, torch.Tensor] | Path, *,
            image_dim: int | None) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """A LoRA (a file, or a raw state dict) in any accepted format -> diffusers' peft form and its
    adapter metadata, by diffusers itself: ``lora_state_dict`` converts the key style (folding alpha
    / rank into the weights), and ``_maybe_expand_t2v_lora_for_i2v`` gives a text-to-video LoRA zero
    deltas on the I2V image projections so that peft can inject it into the I2V DiT."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    if isinstance(source, Path):
        state_dict, metadata = WanLoraLoaderMixin.lora_state_dict(
            str(source.parent), weight_name=source.name, local_files_only=True, return_lora_metadata=True)
    else:
        state_dict, metadata = WanLoraLoaderMixin.lora_state_dict(dict(source), return_lora_metadata=True)
    if not any(key.startswith("transformer.") for key in state_dict):
        state_dict = {f"transformer.{key}": value for key, value in state_dict.items()}
    # The expansion only reads the model's config.image_dim and device: a stand-in keeps it off
    # the (possibly meta) DiT.
    stand_in = types.SimpleNamespace(config=types.SimpleNamespace(image_dim=image_dim), device=torch.device("cpu"))
    return WanLoraLoaderMixin._maybe_expand_t2v_lora_for_i2v(stand_in, state_dict), metadata


def read_adapter(path: Path, *, image_dim: int | None) -> AdapterFile:
    """One LoRA file, identified and converted; ValueError naming the file when it cannot be used."""
    from safetensors import safe_open

    name = path.stem
    if not NAME_PATTERN.match(name):
        raise ValueError(f"LoRA file {path.name}: the name {name!r} must match {NAME_PATTERN.pattern}")
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        keys = list(handle.keys())
    try:
        fmt = key_format(keys)
        state_dict, metadata = convert(path, image_dim=image_dim)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"LoRA file {path.name}: {exc}") from exc
    ranks = [tensor.shape[0] for key, tensor in state_dict.items() if ".lora_A." in key]
    if not ranks:
        raise ValueError(f"LoRA file {path.name} holds no lora_A / lora_down weights")
    return AdapterFile(name=name, path=path, format=fmt, rank=max(ranks), size_bytes=path.stat().st_size,
                       sha256=_sha256(path), state_dict=state_dict, metadata=metadata)


def read_adapters(folder: Path | None, *, image_dim: int | None) -> list[AdapterFile]:
    """Every ``*.safetensors`` adapter in folder, sorted by name; [] when folder is None or absent."""
    if folder is None or not Path(folder).is_dir():
        return []
    adapters = [read_adapter(path, image_dim=image_dim) for path in sorted(Path(folder).glob("*.safetensors"))]
    for adapter in adapters:
        logger.info("LoRA %s: %s format, rank %d, %d bytes, sha256 %s", adapter.name, adapter.format, adapter.rank,
                    adapter.size_bytes, adapter.sha256)
    return adapters
