"""The adapters one daemon holds, and each job's choice of them.

Each adapter module's scale is a 0-dim float32 tensor on its device (peft multiplies the adapter's
output by it), filled in place per job: ``base`` (peft's alpha / rank, 1.0 for converted files)
times the job's scale, 0 for every adapter the job did not choose.

Two modes:
- eager (the default): only the job's adapters are active on each layer; a job without LoRAs
  disables the adapter layers, so it runs exactly the base model's operations (its video is the
  one a daemon without adapters gives, bit for bit) and pays nothing for the adapters it skips;
- static (COMPILE=1): every adapter stays active and only the scale tensors change, so no
  Python value that dynamo guards on changes between jobs and nothing recompiles. An unchosen
  adapter still runs its (small) matmuls, multiplied by an exact 0.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from inference.lora.files import AdapterFile
from inference.lora.inject import adapter_bytes, adapter_id

logger = logging.getLogger(__name__)


class LoraBank:
    """Adapters injected into one transformer (by inference.lora.inject), switched per job."""

    def __init__(self, transformer: torch.nn.Module, adapters: Sequence[AdapterFile]) -> None:
        from peft.tuners.lora import LoraLayer

        self.transformer = transformer
        self.ids = {adapter.name: adapter_id(index) for index, adapter in enumerate(adapters)}
        self.entries = [adapter.describe() for adapter in adapters]
        self.static = False
        self.layers = [module for module in transformer.modules() if isinstance(module, LoraLayer)]
        # (tensor, base) per adapter id, one per layer the adapter modifies.
        self.scales: dict[str, list[tuple[torch.Tensor, float]]] = {ident: [] for ident in self.ids.values()}
        for layer in self.layers:
            device = layer.get_base_layer().weight.device
            for ident, base in list(layer.scaling.items()):
                tensor = torch.zeros((), dtype=torch.float32, device=device)
                layer.scaling[ident] = tensor
                self.scales[ident].append((tensor, float(base)))
        self.current: tuple[tuple[str, float], ...] | None = None
        self.activate([])

    @property
    def names(self) -> list[str]:
        return list(self.ids)

    def memory_bytes(self) -> dict[str, int]:
        """Bytes this rank holds per adapter (after sharding, when sharded)."""
        return {name: adapter_bytes(self.transformer, ident) for name, ident in self.ids.items()}

    def describe(self) -> list[dict[str, object]]:
        """For the worker's row: each adapter's identity and the memory it costs on each rank."""
        memory = self.memory_bytes()
        return [{**entry, "memory_bytes": memory[str(entry["name"])]} for entry in self.entries]

    def make_static(self) -> None:
        """COMPILE=1: every adapter active from now on; jobs change the scale tensors only."""
        self.static = True
        for layer in self.layers:
            layer.enable_adapters(True)
            layer.set_adapter(list(layer.scaling), inference_mode=True)
        self.current = None
        self.activate([])

    @torch.no_grad()
    def activate(self, choices: Sequence[tuple[str, float]]) -> None:
        """Give the next job these (name, scale) adapters, and every other adapter scale 0.
        ValueError naming an adapter this daemon does not hold."""
        # 1. Check the names before changing anything.
        unknown = [name for name, _ in choices if name not in self.ids]
        if unknown:
            raise ValueError(f"unknown LoRA {', '.join(unknown)}; this daemon holds: {', '.join(self.ids) or 'none'}")
        wanted = tuple((name, float(scale)) for name, scale in choices)
        if wanted == self.current:
            return
        # 2. The scale tensors, in place (a compiled graph reads them as inputs).
        chosen = {self.ids[name]: scale for name, scale in wanted}
        for ident, tensors in self.scales.items():
            for tensor, base in tensors:
                tensor.fill_(base * chosen.get(ident, 0.0))
        # 3. Eager: only the chosen adapters run; none chosen: the base layers alone.
        if not self.static:
            for layer in self.layers:
                active = [ident for ident in chosen if ident in layer.scaling]
                layer.enable_adapters(bool(active))
                if active:
                    layer.set_adapter(active, inference_mode=True)
        self.current = wanted
        logger.debug("LoRA adapters for the next job: %s", wanted or "none")
