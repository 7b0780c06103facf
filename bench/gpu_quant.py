"""Quantized DiT on one accelerator: seconds per denoising step, peak memory and output error
against bf16, for DIT_QUANT none / int8 / fp8 and fp8 with 8-bit attention (SageAttention),
at 480P and 720P (81 frames), on the full-size Wan2.1-I2V-14B DiT with random weights.

Prepared for a lent NVIDIA H100/H200 (fp8 needs compute capability 8.9+; the sage case needs
the sageattention package, skipped with a note otherwise). The DiT is rebuilt from the same seed
for every mode (bench/gpu_dit_step.random_dit: 16.4 B parameters, 33 GB in bf16) and quantized as
the daemon does (inference.quant.apply); the inputs are random tensors of the real shapes. One
step is a CFG step (2 DiT passes); the time is the median of --passes timed passes after one
warm-up. The error is the relative L2 error of one pass's output against the bf16 model's.

    python bench/gpu_quant.py                         # CUDA, full size, 480P and 720P
    python bench/gpu_quant.py --tiny --device cpu --sizes 64*64 --frames 5 --modes none,int8
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.gpu_dit_step import TINY, WAN_14B, random_dit  # noqa: E402
from inference.devices import empty_cache, memory_stats, reset_peak_memory, resolve_device, synchronize  # noqa: E402
from inference.quant.apply import quantize_components  # noqa: E402

# name: (DIT_QUANT, attention backend)
MODES = {"none": ("none", None), "int8": ("int8", None), "fp8": ("fp8", None), "fp8+sage": ("fp8", "sage")}


def dit_inputs(config: dict, width: int, height: int, frames: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    latent = (1, config["in_channels"], (frames - 1) // 4 + 1, height // 8, width // 8)  # (B, 36, F', H/8, W/8)
    return {
        "hidden_states": torch.randn(latent, generator=generator).to(device, torch.bfloat16),
        "timestep": torch.tensor([500], device=device),
        "encoder_hidden_states": torch.randn(1, 512, config["text_dim"], generator=generator).to(device, torch.bfloat16),
        "encoder_hidden_states_image": torch.randn(1, 257, config["image_dim"], generator=generator).to(device, torch.bfloat16),
    }


def timed_pass(model: torch.nn.Module, inputs: dict, spec) -> tuple[float, torch.Tensor]:
    synchronize(spec)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model(**inputs, return_dict=False)[0]
    synchronize(spec)
    return time.perf_counter() - started, out


def run_mode(name: str, args: argparse.Namespace, spec, config: dict, reference: dict) -> list[dict]:
    """Build, quantize and time one mode at every size; fill ``reference`` when the mode is none."""
    quant, attention = MODES[name]
    if attention is not None:
        from inference.parallel.sequence import require_installed

        try:
            require_installed(attention)
        except ValueError as error:
            print(json.dumps({"mode": name, "skipped": str(error)}), flush=True)
            return [{"mode": name, "skipped": str(error)}]
    # 1. The model (the same random weights for every mode), quantized as the daemon does.
    gc.collect()
    empty_cache(spec)
    reset_peak_memory(spec)
    model = random_dit(config, spec.torch_device, torch.bfloat16)
    if attention is not None:
        model.set_attention_backend(attention)
    quantize_components(transformer=model, text_encoder=None, dit_mode=quant, t5_mode="none", device=spec)
    if args.compile:
        model.compile_repeated_blocks(fullgraph=True)
    weights = memory_stats(spec).get("allocated_bytes")
    rows = []
    # 2. Per size: a warm-up, timed passes, the error of one output against bf16's.
    for size in args.sizes:
        width, height = (int(v) for v in size.split("*"))
        inputs = dit_inputs(config, width, height, args.frames, spec.torch_device)
        _, out = timed_pass(model, inputs, spec)
        seconds = [timed_pass(model, inputs, spec)[0] for _ in range(args.passes)]
        out = out.float().cpu()
        if name == "none":
            reference[size] = out
        error = float((out - reference[size]).norm() / reference[size].norm()) if size in reference else None
        rows.append({"mode": name, "size": size, "frames": args.frames, "s_per_step": 2 * statistics.median(seconds),
                     "peak_bytes": memory_stats(spec).get("max_allocated_bytes"), "weights_bytes": weights,
                     "relative_error_vs_bf16": error})
        print(json.dumps(rows[-1]), flush=True)
        del inputs, out
    del model
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny config (checks the script on the CPU)")
    parser.add_argument("--sizes", type=lambda text: text.split(","), default=["832*480", "1280*720"])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--modes", type=lambda text: text.split(","), default=list(MODES))
    parser.add_argument("--compile", action="store_true", help="regional compilation, as COMPILE=1")
    parser.add_argument("--out", type=Path, default=None, help="write the rows here as JSON")
    args = parser.parse_args()
    spec = resolve_device(args.device)
    config = TINY if args.tiny else WAN_14B
    reference: dict[str, torch.Tensor] = {}
    rows = []
    for name in ["none"] + [m for m in args.modes if m != "none"]:  # bf16 first: the reference
        try:
            rows += run_mode(name, args, spec, config, reference)
        except (ValueError, RuntimeError) as error:  # a mode this device cannot run: say so, go on
            rows.append({"mode": name, "skipped": f"{type(error).__name__}: {error}"})
            print(json.dumps(rows[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"device": str(spec), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
