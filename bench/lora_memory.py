"""What one LoRA adapter costs the full-size Wan2.1-I2V-14B DiT: memory per rank and matmul work.

    python bench/lora_memory.py [--rank 64] [--ranks 1 8]

Builds the 14B DiT's structure on the meta device (no memory, no weights), makes a LightX2V-style
adapter (original-Wan keys, lora_down / lora_up / alpha on the 12 linears of all 40 blocks; the
up/down matrices on the meta device), converts and injects it with the service's own code
(inference.lora), and counts the adapter's parameters. Prints one JSON object: bytes in bf16 on
one rank and per rank under DIT_FSDP over each --ranks, and the adapter's multiply-adds per token
as a fraction of those of the linears it modifies (an unchosen adapter under COMPILE=1 still runs
them, multiplied by 0). Needs no GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from diffusers import WanTransformer3DModel  # noqa: E402

from bench.gpu_dit_step import WAN_14B  # noqa: E402
from inference.lora.files import AdapterFile, convert  # noqa: E402
from inference.lora.inject import adapter_id, inject, is_lora_parameter  # noqa: E402

ORIGINAL = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
            "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
            "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "attn2.add_k_proj": "cross_attn.k_img",
            "attn2.add_v_proj": "cross_attn.v_img", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--ranks", type=int, nargs="*", default=[1, 2, 4, 8])
    args = parser.parse_args()
    # 1. The DiT's structure, in bf16, without memory.
    with torch.device("meta"):
        model = WanTransformer3DModel(**WAN_14B).to(torch.bfloat16)
    # 2. A LightX2V-style adapter: (rank, in) down, (out, rank) up, a real alpha (it is read).
    raw: dict[str, torch.Tensor] = {}
    base_macs = lora_macs = 0
    for index, block in enumerate(model.blocks):
        for ours, theirs in ORIGINAL.items():
            linear = block.get_submodule(ours)
            prefix = f"diffusion_model.blocks.{index}.{theirs}"
            raw[f"{prefix}.lora_down.weight"] = torch.empty(args.rank, linear.in_features, device="meta")
            raw[f"{prefix}.lora_up.weight"] = torch.empty(linear.out_features, args.rank, device="meta")
            raw[f"{prefix}.alpha"] = torch.tensor(float(args.rank))
            base_macs += linear.in_features * linear.out_features
            lora_macs += args.rank * (linear.in_features + linear.out_features)
    adapter = AdapterFile(name="lightx2v-like", path=Path("-"), format="wan", rank=args.rank, size_bytes=0, sha256="",
                          state_dict=convert(raw, image_dim=WAN_14B["image_dim"])[0])
    # 3. Injected by the service's code; its parameters counted in the DiT's dtype.
    inject(model, [adapter])
    ident = adapter_id(0)
    numbers = sum(p.numel() for name, p in model.named_parameters() if is_lora_parameter(name) and f".{ident}." in name)
    base = sum(p.numel() for name, p in model.named_parameters() if not is_lora_parameter(name))
    one_rank = numbers * torch.bfloat16.itemsize
    print(json.dumps({
        "dit_parameters": base,
        "lora_rank": args.rank,
        "lora_parameters": numbers,
        "lora_bytes_bf16_one_rank": one_rank,
        "lora_mib_bf16_per_rank_under_dit_fsdp": {str(n): round(one_rank / n / 2**20, 1) for n in args.ranks},
        "lora_share_of_dit_parameters": round(numbers / base, 4),
        "lora_macs_per_token_share_of_adapted_linears": round(lora_macs / base_macs, 4),
    }, indent=1))


if __name__ == "__main__":
    main()
