"""Converting a checkpoint in the original Wan2.1 layout to the diffusers layout this service loads.

The original Wan2.1-I2V-14B-720P folder (what the original product's MODEL_CKPT_DIR points at):

    config.json                                        the DiT's hyperparameters ("WanModel")
    diffusion_pytorch_model[-0000k-of-0000n].safetensors (+ .index.json)   the DiT
    models_t5_umt5-xxl-enc-bf16.pth                    UMT5-XXL encoder (Wan's own module names)
    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth   open-clip XLM-R/ViT-H (Wan's names)
    Wan2.1_VAE.pth                                     the VAE
    google/umt5-xxl/                                   the T5 tokenizer

(Those names, and how to tell such a folder, are in ``inference.original_layout``.)

The DiT and the VAE go through diffusers' own single-file converters
(``convert_wan_transformer_to_diffusers``, ``convert_wan_vae_to_diffusers``); T5 and CLIP,
which diffusers does not convert (its own script downloads google/umt5-xxl and laion's
ViT-H-14 instead), are renamed here, key by key. The DiT is converted shard by shard, so
the host never holds more than one shard of it. The output folder loads like any other
diffusers-layout checkpoint.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from inference.checkpoint import validate_checkpoint_dir
from inference.original_layout import CLIP_FILE, DIT_STEM, T5_FILE, TOKENIZER_DIR, VAE_FILE, missing_original_files
from inference.tiny import build_image_processor, build_scheduler

logger = logging.getLogger(__name__)

# Constants of the original models that their files do not record.
T5_MAX_DISTANCE = 128  # umt5-xxl's relative attention max distance
CLIP_HEAD_WIDTH = 80  # ViT-H/14: 1280 channels in 16 heads


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} is not a plain state dict")
    return state


# --------------------------------------------------------------------------- DiT


def _dit_config(folder: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """diffusers' WanTransformer3DModel config from the original config.json and the tensor shapes."""
    original = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if original.get("model_type") != "i2v":
        raise ValueError(f"config.json is a {original.get('model_type')!r} model; only Wan2.1 image-to-video (i2v) is served")
    dim, heads = int(original["dim"]), int(original["num_heads"])
    return {
        "patch_size": list(shapes["patch_embedding.weight"][2:]),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": int(original["in_dim"]),
        "out_channels": int(original["out_dim"]),
        "text_dim": shapes["text_embedding.0.weight"][1],
        "freq_dim": int(original["freq_dim"]),
        "ffn_dim": int(original["ffn_dim"]),
        "num_layers": int(original["num_layers"]),
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": float(original["eps"]),
        "image_dim": shapes["img_emb.proj.0.weight"][0],
        "added_kv_proj_dim": dim,
        "rope_max_seq_len": 1024,
    }


def _dit_shapes(shards: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, from the safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    shapes = {}
    for shard in shards:
        with safe_open(shard, framework="pt", device="cpu") as handle:
            for key in handle.keys():
                shapes[key.removeprefix("model.diffusion_model.")] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _dit_shards(folder: Path) -> list[Path]:
    index = folder / f"{DIT_STEM}.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / name for name in names]
    return sorted(folder.glob(f"{DIT_STEM}*.safetensors"))


def convert_transformer(src: Path, dst: Path) -> None:
    """The DiT, one shard at a time, through diffusers' converter; same shard count as the source."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import load_file, save_file

    shards = _dit_shards(src)
    config = _dit_config(src, _dit_shapes(shards))
    dst.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, start=1):
        tensors = load_file(shard)
        converted = convert_wan_transformer_to_diffusers(dict(tensors))
        name = f"{DIT_STEM}-{number:05d}-of-{len(shards):05d}.safetensors" if len(shards) > 1 else f"{DIT_STEM}.safetensors"
        save_file({k: v.contiguous() for k, v in converted.items()}, dst / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(converted, name))
    # The converted keys must be exactly the model's.
    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    # A pre-quantized DiT (LightX2V's int8/fp8 files) also stores a row scale per quantized weight.
    expected = set(model.state_dict())
    expected |= {f"{name}_scale" for name in expected if f"{name}_scale" in weight_map}
    if set(weight_map) != expected:
        raise ValueError(f"DiT conversion mismatch: missing {sorted(expected - set(weight_map))[:5]}, "
                         f"unexpected {sorted(set(weight_map) - expected)[:5]}")
    model.save_config(dst)
    if len(shards) > 1:
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / f"{DIT_STEM}.safetensors.index.json").write_text(json.dumps(index, indent=2))


# --------------------------------------------------------------------------- VAE


def _vae_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """AutoencoderKLWan's hyperparameters read off the original tensors' shapes."""
    base = int(state["encoder.conv1.weight"].shape[0])
    blocks: dict[int, set[str]] = {}
    for key in state:
        match = re.match(r"encoder\.downsamples\.(\d+)\.(\w+)", key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(match.group(2))
    order = [blocks[i] for i in sorted(blocks)]
    resamples = [i for i, names in enumerate(order) if "resample" in names]
    num_res_blocks = resamples[0] if resamples else len(order)
    dim_mult, temporal = [], []
    for stage in range(len(order) // (num_res_blocks + 1) + 1):
        first = stage * (num_res_blocks + 1)
        if first >= len(order):
            break
        dim_mult.append(int(state[f"encoder.downsamples.{first}.residual.2.weight"].shape[0]) // base)
        resample = first + num_res_blocks
        if resample < len(order) and "resample" in order[resample]:
            temporal.append(f"encoder.downsamples.{resample}.time_conv.weight" in state)
    return {
        "base_dim": base,
        "z_dim": int(state["conv2.weight"].shape[0]),
        "dim_mult": dim_mult,
        "num_res_blocks": num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": temporal,
    }


def convert_vae(src: Path, dst: Path) -> None:
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    state = _load_pth(src / VAE_FILE)
    config = _vae_config(state)
    if config["num_res_blocks"] != 2 or len(config["dim_mult"]) != 4:
        # diffusers' converter indexes the decoder for Wan2.1's 4 stages of 2 residual blocks.
        raise ValueError(f"{VAE_FILE} is not Wan2.1's VAE layout (found {config}); it cannot be converted")
    model = AutoencoderKLWan(**config)
    model.load_state_dict(convert_wan_vae_to_diffusers(state), strict=True)
    model.save_pretrained(dst, safe_serialization=True)


# --------------------------------------------------------------------------- T5


def t5_key(original: str) -> str:
    """Wan's T5 encoder key -> transformers' UMT5EncoderModel key."""
    fixed = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
    if original in fixed:
        return fixed[original]
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", original)
    if not match:
        raise KeyError(f"unknown T5 key {original!r}")
    block, rest = match.groups()
    renames = {
        "norm1.weight": "layer.0.layer_norm.weight",
        "attn.q.weight": "layer.0.SelfAttention.q.weight",
        "attn.k.weight": "layer.0.SelfAttention.k.weight",
        "attn.v.weight": "layer.0.SelfAttention.v.weight",
        "attn.o.weight": "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm2.weight": "layer.1.layer_norm.weight",
        "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # the GELU side
        "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # the linear side
        "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    }
    if rest not in renames:
        raise KeyError(f"unknown T5 key {original!r}")
    return f"encoder.block.{block}.{renames[rest]}"


def _t5_config(state: dict[str, torch.Tensor]) -> Any:
    from transformers import UMT5Config

    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    vocab, d_model = state["token_embedding.weight"].shape
    return UMT5Config(
        vocab_size=int(vocab), d_model=int(d_model), d_kv=int(state["blocks.0.attn.q.weight"].shape[0]) // int(heads),
        d_ff=int(state["blocks.0.ffn.fc1.weight"].shape[0]), num_layers=int(layers), num_heads=int(heads),
        relative_attention_num_buckets=int(buckets), relative_attention_max_distance=T5_MAX_DISTANCE,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, tie_word_embeddings=False,
    )


def convert_t5(src: Path, dst: Path) -> None:
    from transformers import UMT5EncoderModel

    state = _load_pth(src / T5_FILE)
    dtype = state["token_embedding.weight"].dtype
    with torch.device("meta"):
        model = UMT5EncoderModel(_t5_config(state))
    converted = {t5_key(key): tensor for key, tensor in state.items()}
    converted["encoder.embed_tokens.weight"] = converted["shared.weight"]
    model.to(dtype).load_state_dict(converted, strict=True, assign=True)
    model.tie_weights()
    model.save_pretrained(dst, safe_serialization=True)


# --------------------------------------------------------------------------- CLIP


def clip_tensors(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's open-clip visual tower -> transformers' CLIPVisionModel (keys without "vision_model.")."""
    out: dict[str, torch.Tensor] = {}
    plain = {
        "visual.patch_embedding.weight": "embeddings.patch_embedding.weight",
        "visual.pre_norm.weight": "pre_layrnorm.weight", "visual.pre_norm.bias": "pre_layrnorm.bias",
        "visual.post_norm.weight": "post_layernorm.weight", "visual.post_norm.bias": "post_layernorm.bias",
    }
    layer = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
             "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2"}
    for key, tensor in original.items():
        if not key.startswith("visual.") or key == "visual.head":
            continue  # the text tower, log_scale and the projection head are not used
        if key in plain:
            out[plain[key]] = tensor
        elif key == "visual.cls_embedding":
            out["embeddings.class_embedding"] = tensor.reshape(-1)  # (1, 1, C) -> (C,)
        elif key == "visual.pos_embedding":
            out["embeddings.position_embedding.weight"] = tensor.squeeze(0)  # (1, N, C) -> (N, C)
        else:
            match = re.fullmatch(r"visual\.transformer\.(\d+)\.(.+)\.(weight|bias)", key)
            if not match:
                raise KeyError(f"unknown CLIP key {key!r}")
            index, name, kind = match.groups()
            prefix = f"encoder.layers.{index}."
            if name == "attn.to_qkv":
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{part}.{kind}"] = chunk
            elif name in layer:
                out[f"{prefix}{layer[name]}.{kind}"] = tensor
            else:
                raise KeyError(f"unknown CLIP key {key!r}")
    return out


def _clip_config(state: dict[str, torch.Tensor]) -> Any:
    from transformers import CLIPVisionConfig

    hidden, _, patch, _ = state["embeddings.patch_embedding.weight"].shape
    positions = state["embeddings.position_embedding.weight"].shape[0]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    side = int(round((positions - 1) ** 0.5))
    if hidden % CLIP_HEAD_WIDTH:
        raise ValueError(f"CLIP width {hidden} is not a multiple of ViT-H's head width {CLIP_HEAD_WIDTH}")
    return CLIPVisionConfig(
        hidden_size=int(hidden), intermediate_size=int(state["encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=int(layers), num_attention_heads=int(hidden) // CLIP_HEAD_WIDTH, image_size=side * int(patch),
        patch_size=int(patch), hidden_act="gelu", layer_norm_eps=1e-5,
    )


def convert_clip(src: Path, dst: Path) -> None:
    from transformers import CLIPVisionModel

    state = clip_tensors(_load_pth(src / CLIP_FILE))
    dtype = state["embeddings.patch_embedding.weight"].dtype
    with torch.device("meta"):
        model = CLIPVisionModel(_clip_config(state))
    # position_ids is a derived, non-persistent buffer: neither saved nor expected here.
    model.to(dtype).load_state_dict(state, strict=True, assign=True)
    model.save_pretrained(dst, safe_serialization=True)


# --------------------------------------------------------------------------- the folder


def _write_small_parts(src: Path, staging: Path) -> None:
    """Tokenizer, image processor, scheduler and model_index.json."""
    import diffusers
    from transformers import AutoTokenizer

    shutil.copytree(src / TOKENIZER_DIR, staging / "tokenizer")
    tokenizer_class = type(AutoTokenizer.from_pretrained(staging / "tokenizer", local_files_only=True)).__name__
    build_image_processor().save_pretrained(staging / "image_processor")
    build_scheduler().save_pretrained(staging / "scheduler")
    index = {
        "_class_name": "WanImageToVideoPipeline",
        "_diffusers_version": diffusers.__version__,
        "boundary_ratio": None,
        "expand_timesteps": False,
        "image_encoder": ["transformers", "CLIPVisionModel"],
        "image_processor": ["transformers", "CLIPImageProcessorPil"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", tokenizer_class],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "transformer_2": [None, None],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (staging / "model_index.json").write_text(json.dumps(index, indent=2))


def convert_checkpoint(src: Path, dst: Path, *, progress: Callable[[str], None] = logger.info) -> Path:
    """Convert the original-layout folder src into a diffusers-layout folder dst (created; must
    not exist). Written to a sibling temporary folder and renamed into place when complete."""
    # 1. The source must be complete, the destination new.
    src, dst = Path(src).resolve(), Path(dst).resolve()
    missing = missing_original_files(src)
    if missing:
        raise ValueError(f"{src} is not a complete original Wan2.1 checkpoint: missing {', '.join(missing)}")
    if dst.exists():
        raise FileExistsError(f"{dst} already exists")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        # 2. Component by component, the largest first.
        for name, convert in (("transformer", convert_transformer), ("text_encoder", convert_t5),
                              ("image_encoder", convert_clip), ("vae", convert_vae)):
            progress(f"converting {name}")
            convert(src, staging / name)
        _write_small_parts(src, staging)
        # 3. It must validate as the daemon will validate it, then it takes its name.
        validate_checkpoint_dir(staging)
        staging.rename(dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dst
