"""The original's attention cache: its schedule, what a job computes and reuses, exactness."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from inference.cache.attention import COMPUTE, REUSE, STORE, AttentionCachePlan
from inference.cache.steps import CacheRequest
from inference.devices import resolve_device
from inference.generate import GenerationRequest, generate
from inference.parallel.context import ParallelContext
from inference.trial import sample_image
from inference.pipeline.components import WanComponents


def _request(steps: int, cache: CacheRequest, guidance: float = 4.0) -> GenerationRequest:
    return GenerationRequest(prompt="a cat walks across a sunny garden", negative_prompt=None, image=sample_image(64, 64),
                             width=64, height=64, num_frames=5, guidance_scale=guidance, infer_steps=steps, seed=3,
                             sample_solver="unipc", sample_shift=5.0, cache=cache)


def _run(components: WanComponents, request: GenerationRequest):
    return generate(components, request, ctx=ParallelContext.single(resolve_device("cpu")))


def test_the_defaults_over_40_steps_store_every_fourth_step_and_reuse_19():
    plan = AttentionCachePlan(start_step=12, interval=4, end_step=37, steps=40)
    actions = [plan.action(step) for step in range(40)]
    assert [s for s, a in enumerate(actions) if a == STORE] == [12, 16, 20, 24, 28, 32, 36]
    assert actions[:12] == [COMPUTE] * 12 and actions[38:] == [COMPUTE] * 2
    assert actions[13:16] == [REUSE] * 3 and actions[37] == REUSE
    assert plan.reused_steps == 19


def test_an_end_step_past_the_job_is_clipped():
    # The original's own example: 30 steps with end_step 37.
    plan = AttentionCachePlan(start_step=12, interval=4, end_step=37, steps=30)
    assert plan.last_step == 29 and plan.reused_steps == 13 and plan.warnings() == []


def test_a_start_step_past_the_job_reuses_nothing_and_says_so():
    plan = AttentionCachePlan(start_step=30, interval=4, end_step=37, steps=20)
    assert plan.reused_steps == 0
    assert "nothing was reused" in plan.warnings()[0]


@pytest.mark.parametrize(("fields", "message"), [
    ({"start_step": -1}, "start_step must be >= 0"), ({"interval": 0}, "attentioncache_interval must be >= 1"),
    ({"start_step": 37}, r"start_step \(37\) must be less than end_step \(37\)"),
])
def test_bad_plans_are_refused(fields: dict[str, Any], message: str):
    values = {"start_step": 12, "interval": 4, "end_step": 37, "steps": 40, **fields}
    with pytest.raises(ValueError, match=message):
        AttentionCachePlan(**values)


class _Counting:
    """Counts real attention computations per (pass, block)."""

    def __init__(self, processor: Any, block: int, caches: Any, counts: Counter) -> None:
        self.processor, self.block, self.caches, self.counts = processor, block, caches, counts

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.counts[(self.caches.attention.pass_name, self.block)] += 1
        return self.processor(*args, **kwargs)


def test_a_job_computes_and_reuses_at_exactly_the_scheduled_steps(tiny_components: WanComponents, monkeypatch):
    counts: Counter = Counter()
    for index, block in enumerate(tiny_components.transformer.blocks):
        monkeypatch.setattr(block.attn1, "processor", _Counting(block.attn1.processor, index, tiny_components.caches, counts))
    result = _run(tiny_components, _request(40, CacheRequest(method="attention")))
    blocks = len(tiny_components.transformer.blocks)
    # 40 steps, 19 of them reused: 21 computations per block and pass, conditional and unconditional apart.
    assert counts == Counter({(p, b): 21 for p in ("cond", "uncond") for b in range(blocks)})
    report = result.acceleration["cache"]
    assert report["reused_steps_per_pass"] == 19
    assert report["reused"] == {"cond": 19 * blocks, "uncond": 19 * blocks}
    assert report["computed"] == {"cond": 21 * blocks, "uncond": 21 * blocks}


def test_interval_one_stores_every_step_and_equals_the_uncached_job(tiny_components: WanComponents):
    plain = _run(tiny_components, _request(8, CacheRequest()))
    every = _run(tiny_components, _request(8, CacheRequest(method="attention", start_step=2, interval=1, end_step=6)))
    np.testing.assert_array_equal(every.frames, plain.frames)
    assert every.acceleration["cache"]["reused_steps_per_pass"] == 0


def test_reuse_changes_the_result_and_the_next_job_starts_empty(tiny_components: WanComponents):
    plain = _run(tiny_components, _request(8, CacheRequest()))
    cached = _run(tiny_components, _request(8, CacheRequest(method="attention", start_step=1, interval=3, end_step=7)))
    assert not np.array_equal(cached.frames, plain.frames)
    assert tiny_components.caches.attention.holds_nothing()  # nothing outlives the job
    again = _run(tiny_components, _request(8, CacheRequest()))
    np.testing.assert_array_equal(again.frames, plain.frames)


def test_without_guidance_only_the_conditional_pass_is_cached(tiny_components: WanComponents):
    result = _run(tiny_components, _request(10, CacheRequest(method="attention", start_step=2, interval=2, end_step=9),
                                            guidance=1.0))
    assert set(result.acceleration["cache"]["reused"]) == {"cond"}


def test_the_status_of_a_cache_is_reported_with_the_backend(tiny_components: WanComponents):
    result = _run(tiny_components, _request(4, CacheRequest()))
    assert result.acceleration["cache"] == {"method": "none"}
    assert result.acceleration["attention_backend"] == "native"
