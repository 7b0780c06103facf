"""sample_solver "distill": LightX2V's step-distill schedule and Euler steps against their
formulas, and what a distilled job runs (one DiT pass per step, no guidance, said in warnings)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inference.cache.steps import CacheRequest
from inference.generate import make_scheduler
from inference.pipeline.components import WanComponents
from inference.pipeline.distill import StepDistillScheduler, denoising_step_list, distill_grid
from tests.generate_support import run_on_cpu, tiny_request


def shifted(sigma: float, shift: float) -> float:
    return shift * sigma / (1 + (shift - 1) * sigma)


# --------------------------------------------------------------------------- the schedule


def test_four_steps_denoise_at_lightx2v_step_list() -> None:
    assert denoising_step_list(4) == [1000, 750, 500, 250]


@pytest.mark.parametrize("steps", range(1, 9))
def test_one_to_eight_steps_are_evenly_spaced_from_1000(steps: int) -> None:
    step_list = denoising_step_list(steps)
    assert len(step_list) == steps and step_list[0] == 1000
    for k, t in enumerate(step_list):
        assert abs(t - 1000 * (steps - k) / steps) <= 0.5


@pytest.mark.parametrize("steps", [0, 9, 30])
def test_step_counts_outside_one_to_eight_are_refused(steps: int) -> None:
    with pytest.raises(ValueError, match="1-8 steps"):
        denoising_step_list(steps)


@pytest.mark.parametrize("steps,shift", [(4, 5.0), (4, 3.0), (1, 5.0), (3, 7.5), (8, 1.0)])
def test_sigmas_and_timesteps_equal_the_shifted_step_list(steps: int, shift: float) -> None:
    sigmas, timesteps = distill_grid(steps, shift)
    expected = [shifted(t / 1000, shift) for t in denoising_step_list(steps)]
    assert sigmas.dtype == np.float32 and timesteps.dtype == np.float32
    np.testing.assert_allclose(sigmas[:-1], expected, rtol=0, atol=1e-6)
    assert sigmas[-1] == 0.0
    np.testing.assert_allclose(timesteps / 1000, expected, rtol=0, atol=1e-6)


def test_sigmas_equal_lightx2v_indexing_of_its_1000_step_grid() -> None:
    # LightX2V: linspace(1, 0, 1001)[:-1], shifted, indexed at 1000 - step.
    shift = 5.0
    grid = torch.linspace(1.0, 0.0, 1001)[:-1]
    grid = shift * grid / (1 + (shift - 1) * grid)
    theirs = grid[[1000 - t for t in [1000, 750, 500, 250]]]
    scheduler = StepDistillScheduler(shift=shift)
    scheduler.set_timesteps(4)
    torch.testing.assert_close(scheduler.sigmas[:-1], theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(scheduler.timesteps, theirs * 1000, rtol=0, atol=1e-3)


def test_each_euler_step_equals_its_formula_on_identical_model_outputs() -> None:
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 16, 3, 8, 8, generator=generator)
    outputs = [torch.randn(1, 16, 3, 8, 8, generator=generator) for _ in range(4)]
    scheduler = make_scheduler({"num_train_timesteps": 1000}, "distill", 5.0)
    scheduler.set_timesteps(4, device="cpu")
    sigmas = [shifted(t / 1000, 5.0) for t in (1000, 750, 500, 250)] + [0.0]
    x = sample
    expected = sample.double()
    for i, (t, v) in enumerate(zip(scheduler.timesteps, outputs)):
        x = scheduler.step(v, t, x, return_dict=False)[0]
        expected = expected + (sigmas[i + 1] - sigmas[i]) * v.double()  # x_(i+1) = x_i + (s_(i+1) - s_i) v_i
        assert x.dtype == torch.float32
        torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-6)
    # The last step lands on the prediction of x0: x - sigma * v.
    with pytest.raises(ValueError, match="past the 4 steps"):
        scheduler.step(outputs[0], scheduler.timesteps[0], x)


def test_a_step_with_mismatched_shapes_is_refused() -> None:
    scheduler = StepDistillScheduler(shift=5.0)
    scheduler.set_timesteps(4)
    with pytest.raises(ValueError, match="differ"):
        scheduler.step(torch.zeros(1, 16, 2, 4, 4), scheduler.timesteps[0], torch.zeros(1, 16, 3, 4, 4))


# --------------------------------------------------------------------------- a distilled job


def test_a_distilled_job_runs_one_dit_pass_per_step(tiny_components: WanComponents) -> None:
    result = run_on_cpu(tiny_components, tiny_request(sample_solver="distill", infer_steps=4, guidance_scale=1.0))
    assert result.dit_forwards == 4
    assert result.warnings == []
    assert result.frames.shape == (9, 64, 64, 3)


def test_guidance_above_one_is_not_applied_and_says_so(tiny_components: WanComponents) -> None:
    unguided = run_on_cpu(tiny_components, tiny_request(sample_solver="distill", infer_steps=4, guidance_scale=1.0))
    asked = run_on_cpu(tiny_components, tiny_request(sample_solver="distill", infer_steps=4, guidance_scale=5.0))
    np.testing.assert_array_equal(asked.frames, unguided.frames)
    assert asked.dit_forwards == 4
    assert len(asked.warnings) == 1 and "guidance_scale 5 was not applied" in asked.warnings[0]


def test_twenty_steps_with_guidance_run_forty_dit_passes(tiny_components: WanComponents) -> None:
    assert run_on_cpu(tiny_components, tiny_request(infer_steps=20, guidance_scale=5.0)).dit_forwards == 40
    assert run_on_cpu(tiny_components, tiny_request(infer_steps=20, guidance_scale=1.0)).dit_forwards == 20


def test_an_attention_cache_on_a_distilled_job_is_applied_and_reported(tiny_components: WanComponents) -> None:
    request = tiny_request(sample_solver="distill", infer_steps=4, guidance_scale=1.0)
    plain = run_on_cpu(tiny_components, request)
    cache = CacheRequest(method="attention", start_step=1, interval=2, end_step=3)
    cached = run_on_cpu(tiny_components, dataclasses.replace(request, cache=cache))
    assert cached.acceleration["cache"]["reused_steps_per_pass"] == 1  # step 2 reuses step 1's attention
    assert not np.array_equal(cached.frames, plain.frames)
    assert cached.dit_forwards == 4  # every pass ran; only self-attention was reused inside the blocks
    assert any("applied to a 4-step distilled job and reused 1 of its 4 steps" in w for w in cached.warnings)


def test_the_original_attention_cache_defaults_reuse_nothing_of_four_steps_and_say_so(
        tiny_components: WanComponents) -> None:
    request = tiny_request(sample_solver="distill", infer_steps=4, guidance_scale=1.0,
                           cache=CacheRequest(method="attention"))  # 12 / 4 / 37
    result = run_on_cpu(tiny_components, request)
    plain = run_on_cpu(tiny_components, dataclasses.replace(request, cache=CacheRequest()))
    np.testing.assert_array_equal(result.frames, plain.frames)
    assert any("start_step 12 is at or past the job's 4 steps" in w for w in result.warnings)
    assert any("reused 0 of its 4 steps" in w for w in result.warnings)


def test_nine_distilled_steps_are_refused_before_the_models_run(tiny_components: WanComponents) -> None:
    with pytest.raises(ValueError, match="1-8 steps"):
        run_on_cpu(tiny_components, tiny_request(sample_solver="distill", infer_steps=9))
