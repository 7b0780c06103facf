"""What one rank sends through torch.distributed during a job: measured, and modelled.

``TrafficMeter`` measures. A ``TorchDispatchMode`` sees every collective as an operator call
(c10d and functional collectives alike: diffusers' all-to-alls, FSDP's all-gathers, our CFG
exchange and the VAE halo sends). Each call's payload becomes the bytes this rank sends with
the usual algorithm costs (ring all-gather: (n-1) x input; all-to-all: (n-1)/n x input; ring
all-reduce: 2 (n-1)/n x input). It serves ``bench/`` and the tests; jobs never run under it.

``step_traffic`` models the same for one denoising step from the model's sizes and the
topology, so the measured figures on the tiny model check the formula that projects the
real model's.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def _nbytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def _group_size(group: Any) -> int:
    from torch.distributed import distributed_c10d as c10d

    if isinstance(group, str):
        return c10d._resolve_process_group(group).size()
    return torch._C._distributed_c10d.ProcessGroup.unbox(group).size()


def sent_bytes(name: str, args: tuple[Any, ...]) -> int | None:
    """Bytes this rank sends for one collective call; None for an operator that sends nothing."""
    if name == "all_to_all_single":  # (input, output_split_sizes, input_split_sizes, group_name)
        n = _group_size(args[3])
        return _nbytes(args[0]) * (n - 1) // n
    if name == "alltoall_base_":  # (output, input, group, ...)
        n = _group_size(args[2])
        return _nbytes(args[1]) * (n - 1) // n
    if name == "all_gather_into_tensor":  # (input, group_size, group_name)
        return _nbytes(args[0]) * (int(args[1]) - 1)
    if name in ("allgather_", "allgather_into_tensor_coalesced_"):  # (outputs, inputs, group, ...)
        return _nbytes(args[1]) * (_group_size(args[2]) - 1)
    if name == "_allgather_base_":  # (output, input, group, ...)
        return _nbytes(args[1]) * (_group_size(args[2]) - 1)
    if name in ("reduce_scatter_tensor", "_reduce_scatter_base_"):
        return None
    if name in ("allreduce_", "all_reduce"):
        group = args[1] if name == "allreduce_" else args[2]
        n = _group_size(group)
        return 2 * _nbytes(args[0]) * (n - 1) // n
    if name in ("send", "broadcast_", "gather_"):
        return _nbytes(args[0])
    return None


class TrafficMeter(TorchDispatchMode):
    """Bytes sent per job phase and collective kind (the phase is set by ``phase``, a job hook)."""

    def __init__(self, *, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.current = "start"
        self.sent: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def phase(self, name: str) -> None:
        self.current = name

    def __enter__(self) -> "TrafficMeter":
        return super().__enter__() if self.enabled else self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            super().__exit__(*exc)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func.namespace in ("c10d", "_c10d_functional"):
            name = func._schema.name.split("::")[-1]
            count = sent_bytes(name, args)
            if count is not None:
                self.sent[self.current][name] += count
        return func(*args, **(kwargs or {}))

    def report(self, steps: int) -> dict[str, dict[str, float]]:
        """{"per_step": bytes per denoising step by kind, "encoding": ..., "decoding": ...} (per job)."""
        out = {phase: dict(sorted(kinds.items())) for phase, kinds in self.sent.items() if phase != "denoising"}
        out["per_step"] = {kind: total / steps for kind, total in sorted(self.sent.get("denoising", {}).items())}
        return out


# --------------------------------------------------------------------------- the model


def fsdp_shard_bytes(model: torch.nn.Module, ranks: int) -> int:
    """Bytes one rank all-gathers in for one pass of a model whose every parameter FSDP2 shards
    over ``ranks`` (dim 0 chunked as torch.chunk, padded to equal shards)."""
    total = 0
    for param in model.parameters():
        rows = param.shape[0] if param.dim() else 1
        per_row = param.numel() // rows if rows else 0
        total += -(-rows // ranks) * per_row * param.element_size()
    return total


def step_traffic(
    *,
    topology: Any,  # inference.parallel.topology.Topology
    config: Any,  # the DiT's config (num_layers, num_attention_heads, attention_head_dim, out_channels, patch_size)
    tokens: int,  # video tokens of one pass
    activation_bytes: int,  # element size of the DiT's activations (2 for bf16, 4 for fp32)
    guidance: bool,
    fsdp_shard: int = 0,  # fsdp_shard_bytes(DiT, world) when DIT_FSDP
) -> dict[str, float]:
    """Bytes one rank sends in one denoising step, by collective, as our loop communicates."""
    ulysses, ring, world = topology.ulysses_size, topology.ring_size, topology.world_size
    sequence = ulysses * ring
    dim = config.num_attention_heads * config.attention_head_dim
    out_dim = config.out_channels * math.prod(config.patch_size)
    b = activation_bytes
    # 1. DiT passes per rank per step: both CFG passes here, or one per CFG half.
    passes = 2 if guidance and topology.cfg_size == 1 else 1
    traffic: dict[str, float] = defaultdict(float)
    local = tokens // sequence
    if ulysses > 1:  # q, k, v and the output of every self-attention, exchanged within the Ulysses group
        traffic["all_to_all_single"] += passes * config.num_layers * 4 * local * dim * b * (ulysses - 1) / ulysses
    if ring > 1:  # each rank's K and V (ring-local tokens, its Ulysses share of heads) to the ring
        traffic["all_gather_into_tensor"] += passes * config.num_layers * 2 * (tokens // ring) * (dim // ulysses) * b * (ring - 1)
    if sequence > 1:  # the output projection gathered back to the whole sequence
        traffic["all_gather_into_tensor"] += passes * local * out_dim * b * (sequence - 1)
    # 2. CFG parallel: the paired ranks swap their predictions.
    if guidance and topology.cfg_size == 2:
        traffic["allgather_"] += tokens * out_dim * b
    # 3. FSDP: every pass all-gathers the other ranks' shards of every block.
    if topology.dit_fsdp:
        traffic["_allgather_base_"] += passes * fsdp_shard * (world - 1)
    return dict(traffic)
