"""The distilled sampler against the reference recipe on the CPU, tiny model, in one run.

A 40-step UniPC job with classifier-free guidance (80 DiT passes) against a 4-step distilled
job (4 DiT passes), whole jobs through ``inference.generate`` (encoding, denoising, decoding)
on the tiny random-weight checkpoint, same image, seed and size, one process. Prints the wall
time of each job, of its denoising phase, the DiT passes each ran, and the ratios. Random
weights: this measures time, not quality. The ratio of the denoising phases is the one that
carries over to the real model (its DiT passes dominate a job); whole-job ratios on the tiny
model are lower because encoding and decoding weigh more here.

    python bench/distill_cpu.py                      # 96*64, 17 frames
    python bench/distill_cpu.py --width 128 --height 128 --frames 33 --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from inference.devices import resolve_device  # noqa: E402
from inference.generate import GenerationRequest, generate  # noqa: E402
from inference.parallel.context import ParallelContext  # noqa: E402
from inference.pipeline.loading import LoadOptions, load_components  # noqa: E402
from inference.tiny import create_tiny_checkpoint  # noqa: E402
from inference.trial import sample_image  # noqa: E402

RECIPES = {
    "cfg_unipc_40": {"sample_solver": "unipc", "infer_steps": 40, "guidance_scale": 5.0},
    "distill_4": {"sample_solver": "distill", "infer_steps": 4, "guidance_scale": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each job (the median is reported)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ctx = ParallelContext.single(resolve_device("cpu"))
    with tempfile.TemporaryDirectory() as folder:
        ckpt = create_tiny_checkpoint(Path(folder) / "tiny-wan-i2v", seed=0)
        components = load_components(LoadOptions(ckpt_dir=ckpt, device=ctx.device), ctx)
    image = sample_image(args.width, args.height)
    results = {}
    for name, recipe in RECIPES.items():
        request = GenerationRequest(prompt="a cat walks across a sunny garden", negative_prompt=None, image=image,
                                    width=args.width, height=args.height, num_frames=args.frames, seed=7,
                                    sample_shift=5.0, **recipe)
        generate(components, request, ctx=ctx)  # warm-up: allocator, kernels
        walls, denoising = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = generate(components, request, ctx=ctx)
            walls.append(time.perf_counter() - started)
            denoising.append(result.timings["denoising"])
        results[name] = {"job_seconds": round(statistics.median(walls), 3),
                         "denoising_seconds": round(statistics.median(denoising), 3),
                         "dit_forwards": result.dit_forwards, "steps": recipe["infer_steps"]}
    slow, fast = results["cfg_unipc_40"], results["distill_4"]
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
                   f"{args.threads} torch thread(s)",
        "model": "tiny random-weight Wan2.1 I2V (inference/tiny.py)",
        "size": f"{args.width}*{args.height}, {args.frames} frames", "repeat": args.repeat, **results,
        "job_ratio": round(slow["job_seconds"] / fast["job_seconds"], 2),
        "denoising_ratio": round(slow["denoising_seconds"] / fast["denoising_seconds"], 2),
    }, indent=1))


if __name__ == "__main__":
    main()
