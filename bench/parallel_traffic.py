"""What each rank sends, per denoising step and per job, in every parallel mode.

1. Measured: the tiny random-weight model on 2 and 4 CPU ranks over gloo, through
   ``inference.trial --count-bytes`` (real torchrun, the job's own loop); each mode's
   bytes per rank per denoising step next to the traffic model's formula
   (``inference.parallel.traffic.step_traffic``), which must agree.
2. Projected: the same formula with the real Wan2.1-I2V-14B DiT (built on the meta device,
   bf16 with Wan's fp32 modules) at 480p and 720p, 81 frames, on 8 ranks; beside it the
   bandwidth each rank needs to hide that traffic behind its share of the DiT's compute
   (figures.md: one 480p forward 3.28 s, 720p 12.36 s on one H200; 1/8 of it per rank).
3. FSDP: the DiT parameter bytes one rank holds, measured on the tiny model (4 ranks) and
   computed for the 14B DiT on 8 ranks.

Usage: .venv/bin/python bench/parallel_traffic.py   (about a minute on 2 cores)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from diffusers import WanTransformer3DModel  # noqa: E402

from inference.parallel.fsdp import apply_dtypes, diffusers_fp32_patterns  # noqa: E402
from inference.parallel.topology import Topology, TopologyRequest, resolve_topology  # noqa: E402
from inference.parallel.traffic import fsdp_shard_bytes, step_traffic  # noqa: E402

MEASURED = {
    2: {"ulysses 2": "ULYSSES_SIZE=2", "ring 2": "RING_SIZE=2,ULYSSES_SIZE=1", "cfg 2": "CFG_SIZE=2",
        "ulysses 2 + DiT FSDP": "ULYSSES_SIZE=2,DIT_FSDP=1", "cfg 2 + T5 FSDP": "CFG_SIZE=2,T5_FSDP=1",
        "cfg 2 + VAE parallel": "CFG_SIZE=2,VAE_PARALLEL=1"},
    4: {"ulysses 4": "ULYSSES_SIZE=4", "ulysses 2 x ring 2": "ULYSSES_SIZE=2,RING_SIZE=2",
        "ulysses 2 x cfg 2": "ULYSSES_SIZE=2,CFG_SIZE=2",
        "all switches (u2 x cfg2, FSDP, T5 FSDP, VAE)": "ULYSSES_SIZE=2,CFG_SIZE=2,DIT_FSDP=1,T5_FSDP=1,VAE_PARALLEL=1"},
}
PROJECTED = {"ulysses 8": {"ulysses_size": 8}, "ring 8": {"ulysses_size": 1, "ring_size": 8},
             "ulysses 4 x ring 2": {"ulysses_size": 4, "ring_size": 2}, "ulysses 4 x cfg 2": {"cfg_size": 2},
             "ulysses 8 + DiT FSDP": {"ulysses_size": 8, "dit_fsdp": True},
             "ulysses 4 x cfg 2 + DiT FSDP": {"cfg_size": 2, "dit_fsdp": True}}
# Wan2.1-I2V-14B-720P's DiT (diffusers config).
WAN_14B = {"patch_size": [1, 2, 2], "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 36,
           "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
           "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": 1280,
           "added_kv_proj_dim": 5120, "rope_max_seq_len": 1024}
FORWARD_SECONDS = {"480p": 3.28, "720p": 12.36}  # reference/figures.md, one H200, bf16
TOKENS = {"480p": 21 * 30 * 52, "720p": 21 * 45 * 80}  # 81 frames -> 21 latent frames; (H/16) x (W/16)


def _trial(ckpt: Path, out: Path, nproc: int, cases: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "inference.trial", "--ckpt", str(ckpt), "--out", str(out), "--count-bytes"]
    for index, switches in enumerate(cases.values()):
        argv += ["--case", f"c{nproc}_{index}:{switches}"]
    subprocess.run(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f}"


def measured_table(ckpt: Path, out: Path) -> list[str]:
    with torch.device("meta"):
        dit = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(ckpt / "transformer"))
    rows = ["| mode | ranks | measured KiB/rank/step | formula | per job: encoding / decoding KiB (rank 0) |",
            "|---|---|---|---|---|"]
    for nproc, cases in MEASURED.items():
        _trial(ckpt, out, nproc, cases)
        for index, label in enumerate(cases):
            report = json.loads((out / f"c{nproc}_{index}.json").read_text())
            topology = Topology(**report["topology"])
            request = report["request"]
            tokens = ((request["frames"] - 1) // 4 + 1) * (request["height"] // 16) * (request["width"] // 16)
            formula = step_traffic(topology=topology, config=dit.config, tokens=tokens, activation_bytes=4,
                                   guidance=request["guidance"] > 1, fsdp_shard=fsdp_shard_bytes(dit, topology.world_size))
            traffic = report["ranks"][0]["traffic"]
            measured = sum(traffic["per_step"].values())
            per_job = [sum(traffic.get(phase, {}).values()) for phase in ("encoding", "decoding")]
            rows.append(f"| {label} | {nproc} | {_kib(measured)} | {_kib(sum(formula.values()))} | "
                        f"{_kib(per_job[0])} / {_kib(per_job[1])} |")
    return rows


def projected_table() -> list[str]:
    with torch.device("meta"):
        dit = WanTransformer3DModel(**WAN_14B)
    apply_dtypes(dit, torch.bfloat16, diffusers_fp32_patterns(WanTransformer3DModel))
    shard = fsdp_shard_bytes(dit, 8)
    rows = ["| mode (8 ranks) | 480p GB/rank/step | 720p GB/rank/step | 480p GB/s to hide | 720p GB/s to hide |",
            "|---|---|---|---|---|"]
    for label, switches in PROJECTED.items():
        topology, _ = resolve_topology(TopologyRequest(**switches), world_size=8, num_heads=40)
        figures = []
        for resolution in ("480p", "720p"):
            traffic = step_traffic(topology=topology, config=dit.config, tokens=TOKENS[resolution],
                                   activation_bytes=2, guidance=True, fsdp_shard=shard)
            total = sum(traffic.values())
            # Compute per rank per step: two passes of the whole model, shared by 8 ranks.
            seconds = 2 * FORWARD_SECONDS[resolution] / 8
            figures.append((total / 1e9, total / 1e9 / seconds))
        rows.append(f"| {label} | {figures[0][0]:.2f} | {figures[1][0]:.2f} | {figures[0][1]:.0f} | {figures[1][1]:.0f} |")
    return rows


def fsdp_table(ckpt: Path, out: Path) -> list[str]:
    report = json.loads((out / "c4_3.json").read_text())  # all switches on 4 ranks
    single = sum(p.numel() * p.element_size() for p in WanTransformer3DModel.from_pretrained(ckpt, subfolder="transformer").parameters())
    held = [rank["held_bytes"]["transformer"] for rank in report["ranks"]]
    with torch.device("meta"):
        big = WanTransformer3DModel(**WAN_14B)
    apply_dtypes(big, torch.bfloat16, diffusers_fp32_patterns(WanTransformer3DModel))
    whole = sum(p.numel() * p.element_size() for p in big.parameters())
    return [
        "| model | whole DiT | held per rank with DIT_FSDP |",
        "|---|---|---|",
        f"| tiny, 4 ranks (measured) | {single / 1024:,.1f} KiB | {', '.join(f'{h / 1024:,.1f}' for h in held)} KiB |",
        f"| Wan2.1-I2V-14B bf16, 8 ranks (computed) | {whole / 1e9:.2f} GB | {fsdp_shard_bytes(big, 8) / 1e9:.2f} GB |",
    ]


def main() -> None:
    from inference.tiny import create_tiny_checkpoint

    with tempfile.TemporaryDirectory() as scratch:
        ckpt = create_tiny_checkpoint(Path(scratch) / "tiny")
        out = Path(scratch) / "out"
        print("## Measured on gloo (tiny model, 64x80, 9 frames, CFG on): bytes one rank sends\n")
        print("\n".join(measured_table(ckpt, out)))
        print("\n## Projected: Wan2.1-I2V-14B, 81 frames, CFG on, bf16\n")
        print("\n".join(projected_table()))
        print("\n## DiT parameters per rank under FSDP\n")
        print("\n".join(fsdp_table(ckpt, out)))


if __name__ == "__main__":
    main()
