"""What one rank knows of its group while it runs a job."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from inference.devices import DeviceSpec
from inference.parallel.topology import Meshes, Topology, TopologyRequest, resolve_topology


@dataclass
class ParallelContext:
    topology: Topology
    rank: int
    device: DeviceSpec
    meshes: Meshes | None = None  # None on a single rank
    control_group: Any = None  # gloo group over all ranks (CPU tensors, objects); None on a single rank

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.topology.world_size > 1

    @classmethod
    def single(cls, device: DeviceSpec, *, t5_cpu: bool = False) -> "ParallelContext":
        """One rank doing everything (development, tests, INFERENCE_NPROC=1)."""
        topology, _ = resolve_topology(TopologyRequest(t5_cpu=t5_cpu), world_size=1)
        return cls(topology=topology, rank=0, device=device)

    # --- small collectives on the control channel (CPU, gloo) ------------------------------

    def broadcast_tensors(self, tensors: list[torch.Tensor] | None, *, count: int) -> list[torch.Tensor]:
        """Rank 0's CPU tensors on every rank (shapes and dtypes travel with them)."""
        if not self.distributed:
            assert tensors is not None
            return tensors
        box: list[Any] = [
            [(tuple(t.shape), t.dtype) for t in tensors] if self.is_leader and tensors is not None else None
        ]
        dist.broadcast_object_list(box, src=0, group=self.control_group)
        specs = box[0]
        if len(specs) != count:
            raise ValueError(f"expected {count} tensors from rank 0, got {len(specs)}")
        out = []
        for index, (shape, dtype) in enumerate(specs):
            tensor = tensors[index].contiguous() if self.is_leader else torch.empty(shape, dtype=dtype)
            # Sent as raw bytes: gloo does not know every dtype (bf16), bytes are bytes.
            dist.broadcast(tensor.reshape(-1).view(torch.uint8), src=0, group=self.control_group)
            out.append(tensor)
        return out
