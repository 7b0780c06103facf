"""The step caches of one transformer, begun and ended with every job."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from inference.cache.attention import AttentionCache, AttentionCachePlan
from videojobs.params import (
    ATTENTIONCACHE_DEFAULTS,
    CACHE_METHODS,
    CACHE_THRESHOLD_DEFAULT,
    CACHE_THRESHOLD_MAX,
    CACHE_THRESHOLD_MIN,
)


@dataclass(frozen=True)
class CacheRequest:
    """A job's cache choice (the API's use_attentioncache / cache_method and their fields)."""

    method: str = "none"
    start_step: int = ATTENTIONCACHE_DEFAULTS["start_step"]
    interval: int = ATTENTIONCACHE_DEFAULTS["attentioncache_interval"]
    end_step: int = ATTENTIONCACHE_DEFAULTS["end_step"]
    # dbcache: relative change of the first blocks' residual under which a step is reused
    threshold: float = CACHE_THRESHOLD_DEFAULT

    def __post_init__(self) -> None:
        if self.method not in CACHE_METHODS:
            raise ValueError(f"cache method must be one of {', '.join(CACHE_METHODS)}, got {self.method!r}")
        if not CACHE_THRESHOLD_MIN <= self.threshold <= CACHE_THRESHOLD_MAX:
            raise ValueError(f"cache_threshold must be in [{CACHE_THRESHOLD_MIN:g}, {CACHE_THRESHOLD_MAX:g}], "
                             f"got {self.threshold}")


class StepCaches:
    """Installed on the transformer once at load; each job begins with empty caches."""

    def __init__(self, transformer: torch.nn.Module, adaptive: Any = None) -> None:
        self.attention = AttentionCache.install(transformer)
        self.adaptive = adaptive  # inference.cache.adaptive.AdaptiveCache, when available
        self.request = CacheRequest()
        self.calls: dict[str, int] = {}  # this job's DiT calls on this rank, per pass

    def begin(self, request: CacheRequest, steps: int, *, guidance: bool) -> list[str]:
        """Start a job; returns the warnings for its status document."""
        self.request = request
        self.calls = {}
        plan = None
        if request.method == "attention":
            plan = AttentionCachePlan(start_step=request.start_step, interval=request.interval,
                                      end_step=request.end_step, steps=steps)
        self.attention.begin(plan)
        if request.method == "dbcache":
            if self.adaptive is None:
                raise ValueError("cache_method dbcache needs cache-dit, which this worker could not load")
            self.adaptive.begin(threshold=request.threshold, steps=steps, guidance=guidance)
        return plan.warnings() if plan is not None else []

    def position(self, step: int, pass_name: str) -> None:
        # The adaptive cache counts the transformer's calls itself.
        self.calls[pass_name] = self.calls.get(pass_name, 0) + 1
        self.attention.position(step, pass_name)

    def end(self) -> dict[str, Any]:
        """End the job (also after a stop); returns what this rank reused."""
        report: dict[str, Any] = {"method": self.request.method}
        if self.request.method == "attention":
            plan = self.attention.plan
            report.update({"start_step": plan.start_step, "interval": plan.interval, "end_step": plan.last_step,
                           "reused_steps_per_pass": plan.reused_steps, **self.attention.report()})
        elif self.request.method == "dbcache":
            report.update({"threshold": self.request.threshold, **self.adaptive.report()})
        self.attention.end()
        if self.adaptive is not None:
            self.adaptive.end()
        self.request = CacheRequest()
        return report


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from every rank's: under CFG parallel each half knows only its own pass, and
    the ranks of a half agree, so the per-pass tables are united."""
    merged: dict[str, Any] = {}
    for report in reports:
        for key, value in report.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update({k: v for k, v in value.items() if k not in merged.get(key, {})})
            else:
                merged.setdefault(key, value)
    return merged
