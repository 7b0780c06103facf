"""Bytes of weights per rank for the real Wan2.1-I2V-14B, by topology and quantization, computed
from the parameter shapes of the real configs on the meta device (nothing is allocated).

    python bench/quant_weights.py            # the README's table (markdown) and a JSON line

Each component is built from its real config (the DiT as in bench/gpu_dit_step.py, UMT5-XXL,
CLIP ViT-H/14, Wan's VAE) in the dtypes the daemon gives it on an accelerator (DiT and T5 bf16
with diffusers'/transformers' fp32 modules, CLIP and VAE fp32). Quantization converts the Linear
weights inside the repeated blocks (inference.quant.apply): an (out, in) weight then holds out*in
bytes of int8 or fp8 plus a per-row overhead: int8 is measured here by quantizing a bf16 Linear
with torchao on the CPU (float32 scale + int8 zero point: 5 bytes per row); fp8 cannot be
quantized on the CPU, so its overhead is torchao's Float8Tensor per-row float32 scale (4 bytes).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from diffusers import AutoencoderKLWan, WanTransformer3DModel  # noqa: E402
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel  # noqa: E402

from bench.gpu_dit_step import WAN_14B  # noqa: E402
from inference.parallel.fsdp import apply_dtypes, diffusers_fp32_patterns, transformers_fp32_patterns  # noqa: E402
from inference.quant.apply import block_linear_filter, quantize_module  # noqa: E402
from inference.quant.memory import weight_bytes  # noqa: E402

UMT5_XXL = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
CLIP_H14 = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
            "image_size": 224, "patch_size": 14, "hidden_act": "gelu", "projection_dim": 1024}
FP8_ROW_OVERHEAD = 4  # torchao Float8Tensor, per-row granularity: one float32 scale per output row
GIB = 1024**3


def int8_row_overhead() -> int:
    """Bytes per output row beyond the int8 data, measured on a bf16 Linear quantized by torchao."""
    layer = torch.nn.Module()
    layer.blocks = torch.nn.ModuleList([torch.nn.Linear(64, 32, bias=False).to(torch.bfloat16)])
    quantize_module(layer, "int8", block_prefix="blocks.")
    return (weight_bytes(layer) - 64 * 32) // 32


def meta_components() -> dict[str, tuple[torch.nn.Module, str | None]]:
    """The four models on the meta device in the daemon's accelerator dtypes, with their block prefix."""
    with torch.device("meta"):
        dit = WanTransformer3DModel(**WAN_14B)
        t5 = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
        clip = CLIPVisionModel(CLIPVisionConfig(**CLIP_H14))
        vae = AutoencoderKLWan()
    apply_dtypes(dit, torch.bfloat16, diffusers_fp32_patterns(WanTransformer3DModel))
    apply_dtypes(t5, torch.bfloat16, transformers_fp32_patterns(t5, torch.bfloat16))
    return {"transformer": (dit, "blocks."), "text_encoder": (t5, "encoder.block."), "image_encoder": (clip, None),
            "vae": (vae, None)}


def component_bytes(model: torch.nn.Module, block_prefix: str | None, row_overhead: int | None) -> int:
    """Parameter bytes (tied weights once); with row_overhead, block Linear weights as 1-byte values."""
    keep = block_linear_filter(block_prefix) if block_prefix else None
    quantized = {id(module.weight) for name, module in model.named_modules() if keep and keep(module, name)}
    total = 0
    for param in model.parameters():  # parameters() yields a tied weight once
        if row_overhead is not None and id(param) in quantized:
            out_features, in_features = param.shape
            total += out_features * in_features + out_features * row_overhead
        else:
            total += param.numel() * param.element_size()
    return total


def table() -> dict:
    overheads = {"none": None, "int8": int8_row_overhead(), "fp8": FP8_ROW_OVERHEAD}
    parts = meta_components()
    sizes = {name: {mode: component_bytes(model, prefix, overhead) for mode, overhead in overheads.items()}
             for name, (model, prefix) in parts.items()}
    params = {name: sum(p.numel() for p in model.parameters()) for name, (model, _) in parts.items()}
    return {"parameters": params, "bytes": sizes, "row_overhead": overheads}


def rows(report: dict) -> list[tuple[str, str, str, str, float]]:
    """(topology, DIT_QUANT, T5_QUANT, per-rank note, GiB on each accelerator)."""
    b = report["bytes"]
    small = b["image_encoder"]["none"] + b["vae"]["none"]
    out = []
    for dit, t5 in (("none", "none"), ("int8", "none"), ("int8", "int8"), ("fp8", "none"), ("fp8", "int8")):
        whole = b["transformer"][dit] + b["text_encoder"][t5] + small
        out.append(("any (Ulysses/ring/CFG: whole model per rank)", dit, t5, "", whole / GIB))
        if t5 == "none":  # T5 off the accelerators: its mode changes host memory only
            out.append(("any, T5_CPU=true", dit, "any", "T5 in rank 0's host memory", (whole - b["text_encoder"][t5]) / GIB))
    for ranks in (2, 4, 8):
        sharded = (b["transformer"]["none"] + b["text_encoder"]["none"]) / ranks + small
        out.append((f"DIT_FSDP + T5_FSDP over {ranks} ranks", "none", "none", "about 1/N of DiT and T5", sharded / GIB))
    return out


def main() -> None:
    report = table()
    print("| topology | DIT_QUANT | T5_QUANT | GiB of weights per rank | note |")
    print("|---|---|---|---|---|")
    for topology, dit, t5, note, gib in rows(report):
        print(f"| {topology} | {dit} | {t5} | {gib:.2f} | {note} |")
    print("\nparameters: " + ", ".join(f"{k} {v / 1e9:.3f} B" for k, v in report["parameters"].items()))
    print("GiB per component and mode: " + "; ".join(
        f"{name} " + ", ".join(f"{mode} {size / GIB:.2f}" for mode, size in modes.items())
        for name, modes in report["bytes"].items()))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
