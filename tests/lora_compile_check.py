"""COMPILE=1 with LoRA adapters, in a process of its own (tests/test_lora_compile.py runs it).

    python tests/lora_compile_check.py CKPT LORA_DIR [DIT_QUANT]  -> one JSON line

Loads the components compiled (warmed up for the job's shape) and eager, both with the adapters
in LORA_DIR (on a DiT quantized as DIT_QUANT says, default none), runs jobs that change the adapters and their scales, and reports how many graphs
dynamo compiled after the warm-up and how far the compiled frames are from the eager ones.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch._dynamo  # noqa: E402

from inference.devices import resolve_device  # noqa: E402
from inference.generate import generate  # noqa: E402
from inference.parallel.context import ParallelContext  # noqa: E402
from inference.pipeline.loading import LoadOptions, load_components  # noqa: E402
from tests.generate_support import tiny_request  # noqa: E402

JOBS = [[], [("style", 1.0)], [("style", 0.3), ("other", 1.0)], [("other", -0.5)], [("style", 0.0)], []]


def main() -> None:
    ckpt, lora_dir = Path(sys.argv[1]), Path(sys.argv[2])
    dit_quant = sys.argv[3] if len(sys.argv) > 3 else "none"
    ctx = ParallelContext.single(resolve_device("cpu"))
    compiled = load_components(LoadOptions(ckpt_dir=ckpt, device=ctx.device, lora_dir=lora_dir, dit_quant=dit_quant,
                                           compile_shapes=[(64, 64, 9)]), ctx)
    graphs_after_warmup = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    eager = load_components(LoadOptions(ckpt_dir=ckpt, device=ctx.device, lora_dir=lora_dir, dit_quant=dit_quant), ctx)
    differences, frames = [], []
    for loras in JOBS:
        ours = generate(compiled, tiny_request(loras=loras), ctx=ctx).frames
        theirs = generate(eager, tiny_request(loras=loras), ctx=ctx).frames
        differences.append(np.abs(ours.astype(np.int16) - theirs.astype(np.int16)))
        frames.append(ours)
    print(json.dumps({
        "graphs_after_warmup": graphs_after_warmup,
        "graphs_after_jobs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
        "max_difference": int(max(d.max() for d in differences)),
        "differing_fraction": float(max((d > 0).mean() for d in differences)),
        "loras_change_the_video": not np.array_equal(frames[1], frames[0]),
        "first_and_last_equal": bool(np.array_equal(frames[0], frames[-1])),
    }))


if __name__ == "__main__":
    main()
