"""Text embeddings of prompts already encoded, kept for the next jobs.

UMT5-XXL costs 5-11 s per job on a host CPU (T5_CPU) and real time elsewhere; services see the
same texts again and again (retries, the same prompt on several images, and above all Wan's
default negative prompt, which almost every job uses). The cache is keyed by the exact text
and holds the final embeddings in host memory (4 MB each for the real model). The default
negative prompt is pinned: encoded once per process, never evicted.

Every rank keeps the same cache (every rank sees the same texts in the same order), so under
T5_FSDP all ranks agree on what to encode and under T5_CPU on what rank 0 broadcasts.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from videojobs.params import DEFAULT_NEGATIVE_PROMPT


class PromptCache:
    def __init__(self, *, capacity: int, pinned: tuple[str, ...] = (DEFAULT_NEGATIVE_PROMPT,)) -> None:
        if capacity < 0:
            raise ValueError(f"PROMPT_CACHE_SIZE must be >= 0, got {capacity}")
        self.capacity = capacity
        self.pinned = set(pinned)
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> torch.Tensor | None:
        entry = self._entries.get(text)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(text)
        self.hits += 1
        return entry

    def put(self, text: str, embeddings: torch.Tensor) -> None:
        if self.capacity == 0 and text not in self.pinned:
            return
        self._entries[text] = embeddings.detach().to("cpu")
        self._entries.move_to_end(text)
        while sum(1 for key in self._entries if key not in self.pinned) > self.capacity:
            oldest = next(key for key in self._entries if key not in self.pinned)
            del self._entries[oldest]

    def __len__(self) -> int:
        return len(self._entries)
