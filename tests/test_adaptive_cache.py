"""cache_method dbcache: cache-dit's adaptive step cache driven from our loop (one process)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inference.cache.steps import CacheRequest
from inference.devices import resolve_device
from inference.generate import GenerationRequest, JobHooks, generate
from inference.parallel.context import ParallelContext
from inference.trial import sample_image
from inference.pipeline.components import WanComponents

PLAIN = GenerationRequest(prompt="a cat walks across a sunny garden", negative_prompt=None, image=sample_image(64, 64),
                          width=64, height=64, num_frames=9, guidance_scale=4.0, infer_steps=12, seed=1,
                          sample_solver="unipc", sample_shift=5.0)


def _run(components: WanComponents, request: GenerationRequest, hooks: JobHooks | None = None):
    return generate(components, request, ctx=ParallelContext.single(resolve_device("cpu")), hooks=hooks)


def _dbcache(threshold: float) -> GenerationRequest:
    return dataclasses.replace(PLAIN, cache=CacheRequest(method="dbcache", threshold=threshold))


def test_threshold_zero_reuses_nothing_and_is_bit_identical(tiny_components: WanComponents) -> None:
    plain = _run(tiny_components, PLAIN)
    cached = _run(tiny_components, _dbcache(0.0))
    np.testing.assert_array_equal(cached.frames, plain.frames)
    assert cached.acceleration["cache"]["cached_steps"] == {"cond": 0, "uncond": 0}


def test_a_loose_threshold_skips_steps_of_both_passes(tiny_components: WanComponents) -> None:
    plain = _run(tiny_components, PLAIN)
    cached = _run(tiny_components, _dbcache(0.5))
    report = cached.acceleration["cache"]
    assert report["cached_steps"]["cond"] > 0 and report["cached_steps"]["uncond"] > 0
    # The warm-up steps are always computed; never more than 3 reused steps in a row.
    assert min(report["cached_step_numbers"]["cond"]) >= 3
    blocks = len(tiny_components.transformer.blocks)
    assert report["skipped_blocks"]["cond"] == report["cached_steps"]["cond"] * (blocks - report["fn_blocks"])
    assert not np.array_equal(cached.frames, plain.frames)


def test_jobs_after_a_cached_or_stopped_cached_job_are_untouched(tiny_components: WanComponents) -> None:
    plain = _run(tiny_components, PLAIN)
    _run(tiny_components, _dbcache(0.5))

    def stop_at_step_6(done: int, total: int) -> None:
        if done == 6:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        _run(tiny_components, _dbcache(0.5), JobHooks(step=stop_at_step_6))
    np.testing.assert_array_equal(_run(tiny_components, PLAIN).frames, plain.frames)
    # And a cached job repeats exactly: nothing of the stopped one leaked into it.
    first, second = _run(tiny_components, _dbcache(0.5)), _run(tiny_components, _dbcache(0.5))
    np.testing.assert_array_equal(first.frames, second.frames)


def test_without_guidance_only_the_conditional_pass_is_reported(tiny_components: WanComponents) -> None:
    cached = _run(tiny_components, dataclasses.replace(_dbcache(0.5), guidance_scale=1.0))
    assert set(cached.acceleration["cache"]["cached_steps"]) == {"cond"}


def test_passes_the_cache_cut_short_are_counted_out_of_dit_forwards(tiny_components: WanComponents) -> None:
    assert _run(tiny_components, PLAIN).dit_forwards == 24  # 12 steps, two passes each
    cached = _run(tiny_components, _dbcache(0.5))
    skipped = cached.acceleration["cache"]["cached_steps"]
    assert cached.dit_forwards == 24 - skipped["cond"] - skipped["uncond"] < 24
