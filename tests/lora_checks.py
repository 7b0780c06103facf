"""LoRA adapters on a group of CPU ranks (run by tests/test_lora_parallel.py).

    torchrun --nproc_per_node=2 tests/lora_checks.py CKPT MERGED LORA_DIR SCALE OUT.json [SWITCH=VALUE ...]

With the given topology (default: Ulysses over the group, DIT_FSDP), rank 0 writes one JSON
object: the frames of a LoRA job against the same deltas merged offline, a job without LoRAs
against a daemon without adapters, a repeated job (no leak), and the adapter bytes each rank holds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.generate import generate  # noqa: E402
from inference.parallel.context import ParallelContext  # noqa: E402
from inference.parallel.topology import build_meshes, resolve_topology  # noqa: E402
from inference.pipeline.loading import LoadOptions, load_components  # noqa: E402
from inference.runtime import init_runtime, shutdown_runtime  # noqa: E402
from inference.trial import parse_case  # noqa: E402
from tests.generate_support import tiny_request  # noqa: E402


def _difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"max": int(diff.max()), "fraction": float((diff > 0).mean())}


def main() -> None:
    ckpt, merged, lora_dir, scale, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5])
    switches = ",".join(sys.argv[6:]) or "ULYSSES_SIZE=2,DIT_FSDP=1"
    runtime = init_runtime(device="cpu", timeout_seconds=600)
    try:
        _, request = parse_case(f"lora:{switches}")
        topology, _ = resolve_topology(request, world_size=runtime.world_size, num_heads=4, device_kind="cpu")
        ctx = ParallelContext(topology=topology, rank=runtime.rank, device=runtime.device,
                              meshes=build_meshes(topology, "cpu"), control_group=runtime.control_group)
        # 1. With the adapters: the LoRA job, a job without, the LoRA job again.
        with_loras = load_components(LoadOptions(ckpt_dir=ckpt, device=runtime.device, lora_dir=lora_dir), ctx)
        lora_job = tiny_request(loras=[("style", scale)])
        first = generate(with_loras, lora_job, ctx=ctx).frames
        without = generate(with_loras, tiny_request(), ctx=ctx).frames
        again = generate(with_loras, lora_job, ctx=ctx).frames
        memory = with_loras.loras.memory_bytes()["style"]
        # 2. The same deltas merged offline, and the checkpoint without adapters.
        offline = generate(load_components(LoadOptions(ckpt_dir=merged, device=runtime.device), ctx), tiny_request(), ctx=ctx).frames
        plain = generate(load_components(LoadOptions(ckpt_dir=ckpt, device=runtime.device), ctx), tiny_request(), ctx=ctx).frames
        everyone: list = [None] * runtime.world_size
        dist.all_gather_object(everyone, memory, group=runtime.control_group)
        if runtime.is_leader:
            out.write_text(json.dumps({
                "topology": topology.as_dict(),
                "lora_vs_merged": _difference(first, offline),
                "no_lora_equal_plain": bool(np.array_equal(without, plain)),
                "repeat_equal": bool(np.array_equal(first, again)),
                "lora_changes_video": not bool(np.array_equal(first, plain)),
                "memory_bytes_per_rank": everyone,
            }))
    finally:
        shutdown_runtime(runtime)


if __name__ == "__main__":
    main()
