"""Writing a diffusers-layout checkpoint back in the original Wan2.1 layout (tests only).

The inverse of inference/convert.py, key by key, from the original modules' names
(Wan-Video/Wan2.1: wan/modules/model.py, vae.py, t5.py, clip.py). A tiny checkpoint written
this way and converted again must give back the very same tensors.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from inference.convert import t5_key
from inference.original_layout import CLIP_FILE, T5_FILE, TOKENIZER_DIR, VAE_FILE

_DIT_ROOT = {
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.image_embedder.norm1": "img_emb.proj.0",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
    "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
    "proj_out": "head.head",
}
_DIT_BLOCK = [
    ("attn1.to_out.0.", "self_attn.o."), ("attn2.to_out.0.", "cross_attn.o."),
    ("attn1.", "self_attn."), ("attn2.", "cross_attn."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
    ("add_k_proj.", "k_img."), ("add_v_proj.", "v_img."), ("norm_added_k.", "norm_k_img."),
    ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."), ("norm2.", "norm3."),
]


def dit_key(name: str) -> str:
    if name == "scale_shift_table":
        return "head.modulation"
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if match:
        block, rest = match.groups()
        if rest == "scale_shift_table":
            return f"blocks.{block}.modulation"
        for new, old in _DIT_BLOCK:
            rest = rest.replace(new, old)
        return f"blocks.{block}.{rest}"
    for new, old in _DIT_ROOT.items():
        if name.startswith(new + "."):
            return old + name[len(new):]
    return name


def _residual(rest: str) -> str:
    for new, old in (("norm1.gamma", "residual.0.gamma"), ("conv1.", "residual.2."), ("norm2.gamma", "residual.3.gamma"),
                     ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut.")):
        if rest.startswith(new):
            return old + rest[len(new):]
    return rest


def vae_key(name: str) -> str:
    fixed = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
    head, _, rest = name.partition(".")
    if head in fixed:
        return f"{fixed[head]}.{rest}"
    side, _, rest = name.partition(".")  # encoder / decoder
    for new, old in (("conv_in.", "conv1."), ("norm_out.gamma", "head.0.gamma"), ("conv_out.", "head.2.")):
        if rest.startswith(new):
            return f"{side}.{old}{rest[len(new):]}"
    if match := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):
        return f"{side}.middle.{2 * int(match.group(1))}.{_residual(match.group(2))}"
    if match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{side}.middle.1.{match.group(1)}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest):
        return f"{side}.downsamples.{match.group(1)}.{_residual(match.group(2))}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{side}.upsamples.{4 * int(match.group(1)) + int(match.group(2))}.{_residual(match.group(3))}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"{side}.upsamples.{4 * int(match.group(1)) + 3}.{match.group(2)}"
    raise KeyError(name)


def _clip_original(state: dict[str, torch.Tensor], projection: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {"log_scale": torch.tensor(4.6), "textual.token_embedding.weight": torch.zeros(4, 8)}
    for key, tensor in state.items():
        key = key.removeprefix("vision_model.")
        if key == "embeddings.class_embedding":
            out["visual.cls_embedding"] = tensor.reshape(1, 1, -1)
        elif key == "embeddings.position_embedding.weight":
            out["visual.pos_embedding"] = tensor.unsqueeze(0)
        elif key == "embeddings.patch_embedding.weight":
            out["visual.patch_embedding.weight"] = tensor
        elif key.startswith(("pre_layrnorm.", "post_layernorm.")):
            out[key.replace("pre_layrnorm", "visual.pre_norm").replace("post_layernorm", "visual.post_norm")] = tensor
        elif match := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key):
            index, rest = match.groups()
            for new, old in (("layer_norm1", "norm1"), ("layer_norm2", "norm2"), ("self_attn.out_proj", "attn.proj"),
                             ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.2")):
                rest = rest.replace(new, old)
            out[f"visual.transformer.{index}.{rest}"] = tensor
    for index in {int(k.split(".")[2]) for k in out if k.startswith("visual.transformer.")}:
        prefix = f"visual.transformer.{index}.self_attn."
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{prefix}{p}_proj.{kind}") for p in ("q", "k", "v")]
            out[f"visual.transformer.{index}.attn.to_qkv.{kind}"] = torch.cat(parts)
    width = out["visual.patch_embedding.weight"].shape[0]
    out["visual.head"] = torch.randn(width, projection, generator=torch.Generator().manual_seed(3))
    return out


def write_original_layout(ckpt: Path, out: Path) -> Path:
    """ckpt (diffusers layout) -> out (original layout), the DiT in two shards."""
    out.mkdir(parents=True)
    # 1. DiT: renamed, split in two shards with an index, and the original config.json.
    dit = {dit_key(k): v for k, v in load_file(ckpt / "transformer" / "diffusion_pytorch_model.safetensors").items()}
    keys = sorted(dit)
    halves = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: dit[k].contiguous() for k in part}, out / name)
    weight_map = {k: name for name, part in halves.items() for k in part}
    (out / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = json.loads((ckpt / "transformer" / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "model_type": "i2v", "text_len": 512, "in_dim": config["in_channels"],
        "dim": config["num_attention_heads"] * config["attention_head_dim"], "ffn_dim": config["ffn_dim"],
        "freq_dim": config["freq_dim"], "out_dim": config["out_channels"], "num_heads": config["num_attention_heads"],
        "num_layers": config["num_layers"], "eps": config["eps"],
    }))
    # 2. VAE, T5 (inverse of the converter's table) and CLIP as plain .pth state dicts.
    vae = load_file(ckpt / "vae" / "diffusion_pytorch_model.safetensors")
    torch.save({vae_key(k): v for k, v in vae.items()}, out / VAE_FILE)
    t5 = load_file(ckpt / "text_encoder" / "model.safetensors")
    inverse = {}
    for name in t5:
        original = "token_embedding.weight" if name == "shared.weight" else None
        for candidate in _t5_candidates(name):
            if t5_key(candidate) == name:
                original = candidate
        inverse[original] = t5[name]
    torch.save(inverse, out / T5_FILE)
    clip = load_file(ckpt / "image_encoder" / "model.safetensors")
    projection = json.loads((ckpt / "image_encoder" / "config.json").read_text())["projection_dim"]
    torch.save(_clip_original(clip, projection), out / CLIP_FILE)
    # 3. The tokenizer where the original keeps it.
    shutil.copytree(ckpt / "tokenizer", out / TOKENIZER_DIR)
    return out


def _t5_candidates(name: str) -> list[str]:
    if name == "encoder.final_layer_norm.weight":
        return ["norm.weight"]
    match = re.fullmatch(r"encoder\.block\.(\d+)\..+", name)
    if not match:
        return []
    block = match.group(1)
    rests = ["norm1.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight",
             "pos_embedding.embedding.weight", "norm2.weight", "ffn.gate.0.weight", "ffn.fc1.weight", "ffn.fc2.weight"]
    return [f"blocks.{block}.{rest}" for rest in rests]
