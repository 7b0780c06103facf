"""The daemon group's topology: how its ranks split the pipeline, checked before any device is touched.

A topology is built from the original start switches (ULYSSES_SIZE, RING_SIZE, CFG_SIZE,
DIT_FSDP, T5_FSDP, T5_CPU, VAE_PARALLEL) and the world size torchrun gives the group. The
ranks form one mesh over (cfg, ring, ulysses): the CFG halves, and inside each half the
sequence-parallel ranks (ring-major, Ulysses-minor, as diffusers lays out its own mesh).

This module is pure Python: the web process and Django's system checks import it to
explain a bad combination without importing torch. ``build_meshes`` imports torch lazily.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# The variables an operator sets, in the order they are explained.
TOPOLOGY_VARIABLES: tuple[str, ...] = (
    "ULYSSES_SIZE", "RING_SIZE", "CFG_SIZE", "DIT_FSDP", "T5_FSDP", "T5_CPU", "VAE_PARALLEL",
)
MESH_DIM_NAMES: tuple[str, str, str] = ("cfg", "ring", "ulysses")


class TopologyError(ValueError):
    """A combination of switches that cannot run on this group; the message is one line naming
    the variables and what would work."""


@dataclass(frozen=True)
class TopologyRequest:
    """The switches as configured; None means "not set" (the size is then derived)."""

    ulysses_size: int | None = None
    ring_size: int | None = None
    cfg_size: int = 1
    dit_fsdp: bool = False
    t5_fsdp: bool = False
    t5_cpu: bool = False
    vae_parallel: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> "TopologyRequest":
        return cls(
            ulysses_size=settings.ULYSSES_SIZE,
            ring_size=settings.RING_SIZE,
            cfg_size=settings.CFG_SIZE,
            dit_fsdp=settings.DIT_FSDP,
            t5_fsdp=settings.T5_FSDP,
            t5_cpu=settings.T5_CPU,
            vae_parallel=settings.VAE_PARALLEL,
        )


@dataclass(frozen=True)
class Topology:
    """What actually runs. Sharding switches are off on a single rank: there is nothing to
    shard over, and the status document must not claim otherwise."""

    world_size: int
    ulysses_size: int
    ring_size: int
    cfg_size: int
    dit_fsdp: bool
    t5_fsdp: bool
    t5_cpu: bool
    vae_parallel: bool

    @property
    def sequence_size(self) -> int:
        """Ranks that split one transformer pass along the video tokens."""
        return self.ulysses_size * self.ring_size

    @property
    def mesh_shape(self) -> tuple[int, int, int]:
        return (self.cfg_size, self.ring_size, self.ulysses_size)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"{self.world_size} rank(s)", f"ulysses {self.ulysses_size}", f"ring {self.ring_size}", f"cfg {self.cfg_size}"]
        parts += [name for name in ("dit_fsdp", "t5_fsdp", "t5_cpu", "vae_parallel") if getattr(self, name)]
        return ", ".join(parts)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def valid_layouts(world_size: int, num_heads: int | None = None) -> list[str]:
    """Every (CFG_SIZE, RING_SIZE, ULYSSES_SIZE) that fits world_size, as settings to write."""
    layouts = []
    for cfg in (1, 2):
        if world_size % cfg:
            continue
        for ring in _divisors(world_size // cfg):
            ulysses = world_size // cfg // ring
            if num_heads is not None and num_heads % ulysses:
                continue
            layouts.append(f"ULYSSES_SIZE={ulysses} RING_SIZE={ring} CFG_SIZE={cfg}")
    return layouts


def _suggest(world_size: int, num_heads: int | None) -> str:
    layouts = valid_layouts(world_size, num_heads)
    shown = "; ".join(layouts[:4]) + (" ..." if len(layouts) > 4 else "")
    return f"with {world_size} rank(s) use one of: {shown}"


def _sizes(request: TopologyRequest, world_size: int, num_heads: int | None) -> tuple[int, int, int]:
    """(ulysses, ring, cfg), the unset sequence sizes derived from what CFG leaves."""
    cfg = request.cfg_size
    if cfg not in (1, 2):
        raise TopologyError(f"CFG_SIZE must be 1 or 2, got {cfg} (the conditional and unconditional passes are two)")
    for name, value in (("ULYSSES_SIZE", request.ulysses_size), ("RING_SIZE", request.ring_size)):
        if value is not None and value < 1:
            raise TopologyError(f"{name} must be >= 1, got {value}")
    ring = request.ring_size or 1
    ulysses = request.ulysses_size
    if ulysses is None:
        if world_size % (cfg * ring):
            raise TopologyError(
                f"WORLD_SIZE={world_size} does not divide by RING_SIZE x CFG_SIZE = {ring} x {cfg}; "
                + _suggest(world_size, num_heads)
            )
        ulysses = world_size // (cfg * ring)
    product = ulysses * ring * cfg
    if product != world_size:
        raise TopologyError(
            f"ULYSSES_SIZE x RING_SIZE x CFG_SIZE = {ulysses} x {ring} x {cfg} = {product} but the group has "
            f"WORLD_SIZE={world_size} rank(s); {_suggest(world_size, num_heads)} (or unset ULYSSES_SIZE)"
        )
    return ulysses, ring, cfg


def resolve_topology(
    request: TopologyRequest, *, world_size: int, num_heads: int | None = None, device_kind: str | None = None
) -> tuple[Topology, list[str]]:
    """Check the switches against the group and the model; return what runs and the notes to log.

    ``num_heads`` is the DiT's attention head count (unknown to callers that have no model);
    ``device_kind`` ("cuda", "npu", "cpu") refuses what a device cannot run.
    """
    # 1. The sizes multiply up to the world.
    if world_size < 1:
        raise TopologyError(f"WORLD_SIZE must be >= 1, got {world_size}")
    ulysses, ring, cfg = _sizes(request, world_size, num_heads)

    # 2. Ulysses hands each rank whole attention heads.
    if num_heads is not None and num_heads % ulysses:
        fits = [d for d in _divisors(num_heads) if d <= world_size]
        raise TopologyError(
            f"ULYSSES_SIZE={ulysses} does not divide the DiT's {num_heads} attention heads; "
            f"use ULYSSES_SIZE in {fits} and make up the rest with RING_SIZE or CFG_SIZE"
        )

    # 3. The text encoder is either on the CPU or sharded, not both.
    if request.t5_cpu and request.t5_fsdp:
        raise TopologyError("T5_CPU=true and T5_FSDP=true exclude each other: T5 either lives in host memory "
                            "(T5_CPU) or is sharded over the devices (T5_FSDP); set one of them to false")

    # 4. Ring attention merges partial results by their log-sum-exp, which torch_npu's fused
    # kernel does not return through diffusers.
    if ring > 1 and device_kind == "npu":
        raise TopologyError(
            f"RING_SIZE={ring} is not available on Ascend NPUs (the NPU attention kernel returns no log-sum-exp); "
            f"use ULYSSES_SIZE={ulysses * ring} RING_SIZE=1"
        )

    # 5. Sharding over a single rank shards nothing: run (and report) it unsharded.
    notes = []
    flags = {"dit_fsdp": request.dit_fsdp, "t5_fsdp": request.t5_fsdp, "vae_parallel": request.vae_parallel}
    if world_size == 1:
        for name, on in flags.items():
            if on:
                notes.append(f"{name.upper()}=true has nothing to split over on one rank; running without it")
                flags[name] = False
    topology = Topology(
        world_size=world_size, ulysses_size=ulysses, ring_size=ring, cfg_size=cfg, t5_cpu=request.t5_cpu, **flags
    )
    return topology, notes


def sequence_split_error(topology: Topology, *, tokens: int) -> str | None:
    """Why a job's video tokens cannot be split over the sequence ranks, or None when they can."""
    if topology.sequence_size > 1 and tokens % topology.sequence_size:
        return (
            f"the video has {tokens} tokens, which do not split evenly over ULYSSES_SIZE x RING_SIZE = "
            f"{topology.sequence_size} ranks; choose another image_size or num_frames"
        )
    return None


@dataclass
class Meshes:
    """The device meshes of one group. ``grid`` is (cfg, ring, ulysses); ``flat`` is the whole
    group in one dimension (FSDP and the VAE strips)."""

    grid: Any  # torch.distributed.device_mesh.DeviceMesh
    flat: Any

    @property
    def cfg_rank(self) -> int:
        """0 on the half that runs the conditional pass, 1 on the unconditional half."""
        return self.grid.get_local_rank("cfg")

    @property
    def cfg_group(self) -> Any:
        return self.grid.get_group("cfg")


def build_meshes(topology: Topology, device_type: str) -> Meshes | None:
    """The DeviceMeshes of a distributed group (None on a single rank).

    Every rank must call this, in the same order, after the default process group exists.
    """
    if topology.world_size == 1:
        return None
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    grid = init_device_mesh(device_type, topology.mesh_shape, mesh_dim_names=MESH_DIM_NAMES)
    flat = DeviceMesh.from_group(dist.group.WORLD, device_type, mesh_dim_names=("world",))
    return Meshes(grid=grid, flat=flat)
