"""Counting what a rank sends through torch.distributed while a job denoises.

A ``TorchDispatchMode`` sees every collective as an operator call (c10d and functional
collectives alike: diffusers' all-to-alls, FSDP's all-gathers, our CFG exchange and halo
sends). Each call's payload is turned into the bytes this rank sends with the usual
algorithm costs (ring all-gather: (n-1) x input; all-to-all: (n-1)/n x input; ring
all-reduce: 2 (n-1)/n x input). It exists for ``bench/``; a job never runs under it.
"""
from __future__ import annotations

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


class CommMeter(TorchDispatchMode):
    """Bytes sent per collective kind while the phase is "denoising"."""

    def __init__(self, *, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.active = False
        self.sent: dict[str, int] = defaultdict(int)

    def phase(self, name: str) -> None:
        self.active = name == "denoising"

    def __enter__(self) -> "CommMeter":
        return super().__enter__() if self.enabled else self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            super().__exit__(*exc)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if self.active and func.namespace in ("c10d", "_c10d_functional"):
            name = func._schema.name.split("::")[-1]
            count = sent_bytes(name, args)
            if count is not None:
                self.sent[name] += count
        return func(*args, **(kwargs or {}))

    def per_step(self, steps: int) -> dict[str, float]:
        return {name: total / steps for name, total in sorted(self.sent.items())}
