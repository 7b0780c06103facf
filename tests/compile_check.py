"""COMPILE=1 on the tiny model, in a process of its own (tests/test_compile.py runs it).

    python tests/compile_check.py CKPT [DIT_QUANT]  -> one JSON line

Loads the components eagerly and compiled (warmed up for 64x64, 5 frames), runs the same jobs
on both (plain, with the attention cache, and a 4-step distilled job) and reports the frames' difference and whether
any job compiled anything after the warm-up.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch._dynamo  # noqa: E402

from inference.cache.steps import CacheRequest  # noqa: E402
from inference.devices import resolve_device  # noqa: E402
from inference.generate import GenerationRequest, generate  # noqa: E402
from inference.parallel.context import ParallelContext  # noqa: E402
from inference.trial import sample_image  # noqa: E402
from inference.pipeline.loading import LoadOptions, load_components  # noqa: E402


def main() -> None:
    ckpt = Path(sys.argv[1])
    quant = sys.argv[2] if len(sys.argv) > 2 else "none"  # both sides quantized alike (tests/test_quant_combinations.py)
    ctx = ParallelContext.single(resolve_device("cpu"))
    plain = GenerationRequest(prompt="a cat walks", negative_prompt=None, image=sample_image(64, 64), width=64,
                              height=64, num_frames=5, guidance_scale=4.0, infer_steps=6, seed=1,
                              sample_solver="unipc", sample_shift=5.0)
    cached = dataclasses.replace(plain, cache=CacheRequest(method="attention", start_step=1, interval=2, end_step=5))
    # The 4-step distilled sampler: float timesteps, one pass per step, through the same blocks.
    distilled = dataclasses.replace(plain, sample_solver="distill", infer_steps=4, guidance_scale=1.0)
    eager = load_components(LoadOptions(ckpt_dir=ckpt, device=ctx.device, dit_quant=quant), ctx)
    started = time.perf_counter()
    compiled = load_components(LoadOptions(ckpt_dir=ckpt, device=ctx.device, compile_shapes=[(64, 64, 5)],
                                           dit_quant=quant), ctx)
    warmup = time.perf_counter() - started
    frames_after_warmup = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    differences = []
    for request in (plain, cached, distilled, plain):
        ours, theirs = generate(compiled, request, ctx=ctx).frames, generate(eager, request, ctx=ctx).frames
        differences.append(np.abs(ours.astype(np.int16) - theirs.astype(np.int16)))
    print(json.dumps({
        "warmup_seconds": round(warmup, 1),
        "graphs_after_warmup": frames_after_warmup,
        "graphs_after_jobs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
        "max_difference": int(max(d.max() for d in differences)),
        "differing_fraction": float(max((d > 0).mean() for d in differences)),
    }))


if __name__ == "__main__":
    main()
