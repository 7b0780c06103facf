"""LoRA adapters into the DiT, with diffusers' ``load_lora_adapter`` (peft underneath).

Whole model: the adapters are injected with their weights into the loaded DiT. Sharded model
(DIT_FSDP): they are injected into the meta-device structure before ``fully_shard``, so that
FSDP2 shards each adapter's matrices with their block; once the base rows are loaded, each rank
copies its rows of every adapter matrix from the converted state dict (``fill_rows``).

peft keeps adapters in ModuleDicts, whose keys cannot hold '.', so each adapter is injected
under an id of its own (``adapter0``, ``adapter1``, ... in name order); LoraBank maps names to ids.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import torch
from torch.distributed.tensor import DTensor

from inference.lora.files import AdapterFile
from inference.parallel.fsdp import local_rows

LORA_MARK = "lora_"  # in the name of every adapter parameter (lora_A, lora_B); never in a base one


def adapter_id(index: int) -> str:
    return f"adapter{index}"


def is_lora_parameter(name: str) -> bool:
    return f".{LORA_MARK}" in name


def inject(transformer: torch.nn.Module, adapters: Iterable[AdapterFile]) -> list[str]:
    """Inject each adapter (structure, and weights unless the model is on the meta device);
    returns their ids in order. Adapter weights take the dtype and device of their base layer."""
    ids = []
    for index, adapter in enumerate(adapters):
        ids.append(adapter_id(index))
        with warnings.catch_warnings():
            # Copying into meta parameters is a no-op that torch warns about: the rows come later.
            warnings.filterwarnings("ignore", message=".*meta parameter.*")
            # Several adapters in one model is what we want, not a mistake.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            try:
                transformer.load_lora_adapter(dict(adapter.state_dict), adapter_name=ids[-1], prefix="transformer",
                                              metadata=adapter.metadata)
            except (ValueError, RuntimeError) as exc:  # peft: modules the DiT lacks, shapes that do not fit
                raise ValueError(f"LoRA {adapter.name}: {exc}") from exc
        if not any(f".lora_A.{ids[-1]}." in name for name, _ in transformer.named_parameters()):
            raise ValueError(f"LoRA {adapter.name}: none of its keys names a module of the DiT "
                             f"(first key: {next(iter(adapter.state_dict), 'none')})")
    _match_base_layers(transformer)
    return ids


@torch.no_grad()
def _match_base_layers(transformer: torch.nn.Module) -> None:
    """Every adapter matrix in the dtype and on the device of the weight it modifies."""
    from peft.tuners.lora import LoraLayer

    for module in transformer.modules():
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer().weight
        for holder in (module.lora_A, module.lora_B):
            for layer in holder.values():
                for param in layer.parameters():
                    param.data = param.data.to(device=base.device, dtype=base.dtype)


def _state_dict_key(parameter: str, ident: str) -> str | None:
    """'blocks.0.attn1.to_q.lora_A.adapter0.weight' -> 'transformer.blocks.0.attn1.to_q.lora_A.weight'
    for ident 'adapter0'; None for a parameter of another adapter or of the base model."""
    for matrix in ("lora_A", "lora_B"):
        marker = f".{matrix}.{ident}."
        if marker in parameter:
            return "transformer." + parameter.replace(marker, f".{matrix}.")
    return None


@torch.no_grad()
def fill_rows(transformer: torch.nn.Module, adapters: list[AdapterFile], ids: list[str]) -> None:
    """After a sharded load: every rank copies its rows of each adapter matrix (FSDP2 shards dim 0
    as torch.chunk does); unsharded matrices are copied whole. KeyError for a matrix with no source."""
    for adapter, ident in zip(adapters, ids):
        for name, param in transformer.named_parameters():
            key = _state_dict_key(name, ident)
            if key is None:
                continue
            if key not in adapter.state_dict:
                raise KeyError(f"LoRA {adapter.name}: no weights for {name}")
            source = adapter.state_dict[key]
            if isinstance(param, DTensor):
                start, stop = local_rows(param)
                local = param.to_local()
                local.copy_(source[start:stop].to(dtype=local.dtype))
            else:
                param.copy_(source.to(dtype=param.dtype))


def adapter_bytes(transformer: torch.nn.Module, ident: str) -> int:
    """Bytes this rank holds for one adapter (its shards only, when sharded)."""
    total = 0
    for name, param in transformer.named_parameters():
        if _state_dict_key(name, ident) is not None:
            local = param.to_local() if isinstance(param, DTensor) else param
            total += local.numel() * local.element_size()
    return total
