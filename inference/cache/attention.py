"""The original product's attention cache, with its documented semantics.

Per request: ``use_attentioncache``, ``start_step`` (12), ``attentioncache_interval`` (4),
``end_step`` (37). In every transformer block the self-attention output is computed and
stored at ``start_step`` and every ``interval`` steps after it, and reused on the steps in
between, up to ``end_step`` (inclusive, clipped to the job's last step); before ``start_step``
and after ``end_step`` everything is computed. Steps are denoising steps (0-based), not
transformer calls: the conditional and unconditional passes keep separate caches. So 12/4/37
over 40 steps stores at 12, 16, ..., 36 and reuses 19 steps per pass.

Each block's ``attn1`` (the self-attention module, projection included) becomes a
``CachedWanAttention``: the same module whose forward first asks the cache. A rank reuses what
it computed itself, so it works unchanged under Ulysses and ring (each rank keeps its own
tokens' outputs), CFG parallel (each half keeps its pass) and FSDP (every rank skips the same
module at the same step, so their collectives stay matched). The outputs are kept in each
module's own non-persistent buffers (one per pass), and the only thing a block reads of the
shared cache is this step's action and pass, so under torch.compile all 40 blocks share a
handful of graphs (compute, store or reuse, per pass) instead of recompiling per block.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

COMPUTE, STORE, REUSE = "compute", "store", "reuse"


@dataclass(frozen=True)
class AttentionCachePlan:
    start_step: int
    interval: int
    end_step: int
    steps: int  # the job's denoising steps

    def __post_init__(self) -> None:
        if self.start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {self.start_step}")
        if self.interval < 1:
            raise ValueError(f"attentioncache_interval must be >= 1, got {self.interval}")
        if self.start_step >= self.end_step:
            raise ValueError(f"start_step ({self.start_step}) must be less than end_step ({self.end_step})")

    @property
    def last_step(self) -> int:
        """end_step clipped to the job's last step (the original sends 30 steps with end_step 37)."""
        return min(self.end_step, self.steps - 1)

    def action(self, step: int) -> str:
        if step < self.start_step or step > self.last_step:
            return COMPUTE
        return STORE if (step - self.start_step) % self.interval == 0 else REUSE

    @property
    def reused_steps(self) -> int:
        return sum(self.action(step) == REUSE for step in range(self.steps))

    def warnings(self) -> list[str]:
        if self.start_step >= self.steps:
            return [f"attention cache: start_step {self.start_step} is at or past the job's {self.steps} steps; "
                    "nothing was reused"]
        return []


SLOTS = {"cond": "_cached_cond", "uncond": "_cached_uncond"}


@dataclass
class AttentionCache:
    """Installed once on a transformer; active only for a job that has a plan."""

    modules: list[torch.nn.Module] = field(default_factory=list)
    plan: AttentionCachePlan | None = None
    action: str = COMPUTE  # what the blocks do in this transformer call
    slot: str = SLOTS["cond"]  # the buffer of this call's pass
    pass_name: str = "cond"
    computed: dict[str, int] = field(default_factory=dict)  # attention computations per pass
    reused: dict[str, int] = field(default_factory=dict)  # attention outputs reused per pass

    @classmethod
    def install(cls, transformer: torch.nn.Module) -> "AttentionCache":
        cache = cls()
        for block in transformer.blocks:
            attention = block.attn1
            attention.__class__ = _cached_class(type(attention))
            attention._attention_cache = cache
            for slot in SLOTS.values():
                attention.register_buffer(slot, None, persistent=False)
            cache.modules.append(attention)
        return cache

    def begin(self, plan: AttentionCachePlan | None) -> None:
        """A new job: an empty cache (the last job's outputs must never leak into this one)."""
        self.plan = plan
        self._clear()
        self.computed, self.reused = {}, {}

    def end(self) -> None:
        self.plan = None
        self.action = COMPUTE
        self._clear()

    def position(self, step: int, pass_name: str) -> None:
        """Before a transformer call: this step's action for every block, counted per pass."""
        self.pass_name, self.slot = pass_name, SLOTS[pass_name]
        self.action = COMPUTE if self.plan is None else self.plan.action(step)
        if self.plan is not None:
            counts = self.reused if self.action == REUSE else self.computed
            counts[pass_name] = counts.get(pass_name, 0) + len(self.modules)

    def report(self) -> dict[str, Any]:
        return {"computed": dict(self.computed), "reused": dict(self.reused)}

    def force(self, action: str, pass_name: str) -> None:
        """Set the blocks' action outside a job (compilation warm-up); end() resets it."""
        self.action, self.pass_name, self.slot = action, pass_name, SLOTS[pass_name]

    def holds_nothing(self) -> bool:
        return all(getattr(module, slot) is None for module in self.modules for slot in SLOTS.values())

    def _clear(self) -> None:
        for module in self.modules:
            for slot in SLOTS.values():
                setattr(module, slot, None)


_CLASSES: dict[type, type] = {}


def _cached_class(base: type) -> type:
    """One subclass per attention class (FSDP2 makes its own per wrapped class)."""
    if base not in _CLASSES:
        def forward(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            cache = self._attention_cache
            if cache.action == REUSE:
                return getattr(self, cache.slot)
            output = base.forward(self, *args, **kwargs)
            if cache.action == STORE:
                setattr(self, cache.slot, output)
            return output

        _CLASSES[base] = type(f"Cached{base.__name__}", (base,), {"forward": forward})
    return _CLASSES[base]
