"""LoRA files for the tiny model in every accepted key format, and the same deltas merged offline.

Every adapted linear of the tiny DiT gets a random (down, up, alpha) triple; ``write_lora``
writes it in one of the three formats (Wan/LightX2V, peft, kohya), and ``merged_checkpoint``
copies a checkpoint with W + scale * alpha / rank * up @ down in place of each adapted W.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# diffusers' module (inside blocks.N) -> the original Wan name of the same linear.
TARGETS: dict[str, str] = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v", "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}


@dataclass
class LoraDeltas:
    """Per diffusers module name ('blocks.0.attn1.to_q'): (down (r, in), up (out, r), alpha)."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    def delta(self, module: str) -> torch.Tensor:
        down, up, alpha = self.modules[module]
        return alpha / down.shape[0] * up @ down


def random_deltas(ckpt: Path, *, rank: int = 2, alpha: float = 3.0, seed: int = 0, magnitude: float = 0.2) -> LoraDeltas:
    """Random deltas for every adapted linear of the checkpoint's DiT."""
    weights = load_file(str(ckpt / "transformer" / "diffusion_pytorch_model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    blocks = sorted({int(key.split(".")[1]) for key in weights if key.startswith("blocks.")})
    modules = {}
    for block in blocks:
        for target in TARGETS:
            out_features, in_features = weights[f"blocks.{block}.{target}.weight"].shape
            down = torch.randn(rank, in_features, generator=generator) * magnitude
            up = torch.randn(out_features, rank, generator=generator) * magnitude
            modules[f"blocks.{block}.{target}"] = (down, up, alpha)
    return LoraDeltas(modules)


def _original(module: str) -> str:
    _, block, *rest = module.split(".")
    return f"blocks.{block}.{TARGETS['.'.join(rest)]}"


def lora_tensors(deltas: LoraDeltas, fmt: str) -> dict[str, torch.Tensor]:
    """The deltas as a LoRA file of format 'wan', 'peft' or 'kohya' holds them."""
    tensors: dict[str, torch.Tensor] = {}
    for module, (down, up, alpha) in deltas.modules.items():
        if fmt == "wan":
            prefix = f"diffusion_model.{_original(module)}"
            tensors |= {f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up,
                        f"{prefix}.alpha": torch.tensor(alpha)}
        elif fmt == "kohya":
            prefix = "lora_unet_" + _original(module).replace(".", "_")
            tensors |= {f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up,
                        f"{prefix}.alpha": torch.tensor(alpha)}
        elif fmt == "peft":
            # peft files carry no alpha: the scale alpha / rank is in lora_A.
            tensors |= {f"transformer.{module}.lora_A.weight": down * (alpha / down.shape[0]),
                        f"transformer.{module}.lora_B.weight": up}
        else:
            raise ValueError(f"unknown format {fmt!r}")
    return {key: value.contiguous() for key, value in tensors.items()}


def write_lora(folder: Path, name: str, deltas: LoraDeltas, fmt: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(lora_tensors(deltas, fmt), str(path))
    return path


def write_peft_with_metadata(folder: Path, name: str, deltas: LoraDeltas) -> Path:
    """The deltas as diffusers saves a peft adapter: lora_A / lora_B unscaled, and r and lora_alpha
    in the file's adapter metadata (``save_lora_weights``)."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    (down, _, alpha) = next(iter(deltas.modules.values()))
    layers = {}
    for module, (down_m, up_m, _) in deltas.modules.items():
        layers[f"{module}.lora_A.weight"] = down_m.contiguous()
        layers[f"{module}.lora_B.weight"] = up_m.contiguous()
    metadata = {"r": down.shape[0], "lora_alpha": alpha, "target_modules": sorted({m.split(".", 2)[2] for m in deltas.modules})}
    folder.mkdir(parents=True, exist_ok=True)
    WanLoraLoaderMixin.save_lora_weights(folder, transformer_lora_layers=layers, weight_name=f"{name}.safetensors",
                                         transformer_lora_adapter_metadata=metadata)
    return folder / f"{name}.safetensors"


def merged_checkpoint(ckpt: Path, out: Path, deltas: LoraDeltas, scale: float) -> Path:
    """A copy of ckpt whose DiT weights are W + scale * alpha / rank * up @ down (float32)."""
    shutil.copytree(ckpt, out)
    path = out / "transformer" / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(path))
    for module in deltas.modules:
        key = f"{module}.weight"
        weights[key] = (weights[key].double() + scale * deltas.delta(module).double()).to(weights[key].dtype)
    save_file(weights, str(path), metadata={"format": "pt"})
    return out
