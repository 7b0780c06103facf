"""FSDP2 sharding of the DiT and T5 blocks, and loading each rank's shard straight from disk.

A sharded model is built on the meta device (no memory), given its final dtypes, wrapped
with ``fully_shard`` block by block, materialised empty on the rank's device, and then
filled from the safetensors files: each rank reads only the rows of every tensor that it
owns (``safe_open(...).get_slice``). No rank, and so not the host either, ever holds a full
copy of a sharded model.

FSDP2 all-gathers the parameters of one group in one buffer and so needs one dtype per
group. Wan keeps a few small modules in fp32 inside bf16 blocks (the norms, the modulation
table, the time embedder); ``shard_in_uniform_groups`` gives such modules a group of their own.
"""
from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.distributed.tensor import DTensor

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sharding


def _pending(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters under module that no FSDP group manages yet (managed ones are DTensors)."""
    return [p for p in module.parameters() if not isinstance(p, DTensor)]


def shard_in_uniform_groups(module: torch.nn.Module, mesh: Any) -> int:
    """``fully_shard`` module if its unmanaged parameters share one dtype; otherwise its children
    first, then module itself for its own direct parameters. Returns the groups created."""
    from torch.distributed.fsdp import fully_shard

    pending = _pending(module)
    if not pending:
        return 0
    groups = 0
    if len({p.dtype for p in pending}) > 1:
        groups = sum(shard_in_uniform_groups(child, mesh) for child in module.children())
        pending = _pending(module)
        if not pending:
            return groups
        dtypes = sorted(str(d) for d in {p.dtype for p in pending})
        if len(dtypes) > 1:
            raise ValueError(f"{type(module).__name__} holds parameters of several dtypes itself ({dtypes}); "
                             "FSDP needs one dtype per group")
    fully_shard(module, mesh=mesh, reshard_after_forward=True)
    return groups + 1


def shard_blocks(model: torch.nn.Module, blocks: Iterable[torch.nn.Module], mesh: Any) -> int:
    """One FSDP group (or one per dtype) per block, then the rest of the model."""
    groups = sum(shard_in_uniform_groups(block, mesh) for block in blocks)
    return groups + shard_in_uniform_groups(model, mesh)


# --------------------------------------------------------------------------- dtypes


def apply_dtypes(model: torch.nn.Module, dtype: torch.dtype, fp32_patterns: Iterable[str]) -> None:
    """Cast floating parameters and buffers to dtype, keeping in fp32 those whose dotted name has
    a component in fp32_patterns: the rule diffusers and transformers apply in from_pretrained."""
    patterns = set(fp32_patterns)
    for module_name, module in model.named_modules():
        for registry in (module._parameters, module._buffers):
            for name, tensor in registry.items():
                if tensor is None or not tensor.is_floating_point():
                    continue
                full = f"{module_name}.{name}" if module_name else name
                target = torch.float32 if patterns & set(full.split(".")) else dtype
                if isinstance(tensor, torch.nn.Parameter):
                    tensor.data = tensor.data.to(target)
                else:
                    registry[name] = tensor.to(target)


def diffusers_fp32_patterns(model_class: type) -> tuple[str, ...]:
    """diffusers keeps ``_keep_in_fp32_modules`` in fp32 whenever a dtype is requested."""
    return tuple(getattr(model_class, "_keep_in_fp32_modules", None) or ())


def transformers_fp32_patterns(model: torch.nn.Module, dtype: torch.dtype) -> tuple[str, ...]:
    """transformers keeps ``_keep_in_fp32_modules`` in fp32 for fp16 only, and
    ``_keep_in_fp32_modules_strict`` for fp16 and bf16."""
    patterns: set[str] = set()
    if dtype == torch.float16:
        patterns |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
    if dtype in (torch.float16, torch.bfloat16):
        patterns |= set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    return tuple(sorted(patterns))


# --------------------------------------------------------------------------- loading


def weight_map(folder: Path, stem: str) -> dict[str, Path]:
    """Tensor name -> safetensors file, from ``<stem>.safetensors.index.json`` or the single file."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        entries = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: folder / file for name, file in entries.items()}
    single = folder / f"{stem}.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"{folder} has neither {single.name} nor {index.name}: sharded loading needs safetensors")
    from safetensors import safe_open

    with safe_open(single, framework="pt", device="cpu") as handle:
        return {name: single for name in handle.keys()}


def _local_rows(param: DTensor) -> tuple[int, int]:
    """[start, stop) of dim 0 held by this rank; FSDP2 chunks dim 0 as torch.chunk does."""
    mesh = param.device_mesh
    world, rank = mesh.size(), mesh.get_local_rank()
    rows = param.shape[0]
    chunk = -(-rows // world)
    start = min(rank * chunk, rows)
    stop = min(start + chunk, rows)
    local = param.to_local().shape[0]
    if stop - start != local:
        raise RuntimeError(f"unexpected FSDP shard: rows {start}:{stop} of {rows} but {local} held locally")
    return start, stop


local_rows = _local_rows  # public: LoRA adapters fill their rows the same way (inference/lora/inject.py)


def _aliases(model: torch.nn.Module) -> dict[str, list[str]]:
    """Every name of each parameter object: tied weights (T5's shared / embed_tokens) have several,
    and a checkpoint stores only one of them."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {aliases[0]: aliases for aliases in names.values()}


@torch.no_grad()
def load_into(model: torch.nn.Module, files: dict[str, Path], *, rename: Callable[[str], str] = lambda n: n,
              skip: Callable[[str], bool] = lambda n: False) -> None:
    """Fill model's parameters and persistent buffers from safetensors, each rank reading only the
    slice it holds; parameters whose name ``skip`` accepts (LoRA adapters) are the caller's to fill.
    Raises KeyError naming a tensor the checkpoint lacks."""
    from safetensors import safe_open

    aliases = _aliases(model)
    with ExitStack() as stack:
        handles: dict[Path, Any] = {}

        def source(name: str) -> Any:
            for candidate in aliases.get(name, [name]):
                key = rename(candidate)
                if key in files:
                    path = files[key]
                    if path not in handles:
                        handles[path] = stack.enter_context(safe_open(path, framework="pt", device="cpu"))
                    return handles[path].get_slice(key)
            raise KeyError(f"the checkpoint has no tensor for {name!r}")

        # 1. Parameters: the local rows of sharded ones, all of the others.
        for name, param in model.named_parameters():
            if skip(name):
                continue
            view = source(name)
            if isinstance(param, DTensor):
                start, stop = _local_rows(param)
                local = param.to_local()
                local.copy_(view[start:stop].to(dtype=local.dtype))
            else:
                param.copy_(view[:].to(dtype=param.dtype))

        # 2. Persistent buffers (non-persistent ones are the caller's to recompute).
        persistent = {name for name, _ in model.state_dict().items()}
        for name, buffer in model.named_buffers():
            if name in persistent:
                buffer.copy_(source(name)[:].to(dtype=buffer.dtype))


def non_persistent_buffers(model: torch.nn.Module) -> list[str]:
    persistent = set(model.state_dict())
    return [name for name, _ in model.named_buffers() if name not in persistent]

