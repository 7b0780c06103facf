"""inference.generate (our own loop) on the tiny checkpoint, on the CPU, at tiny sizes: its
outputs, phases, hooks and stops, and the requests it refuses."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from diffusers import (
    WanImageToVideoPipeline,
)

from inference.generate import (
    JobHooks,
    make_scheduler,
    prepare_condition_image,
)
from inference.pipeline.components import WanComponents
from inference.pipeline.encode import clip_pixels, frame_pixels
from inference.pipeline.schedule import wan_grid
from tests.generate_support import run_on_cpu, tiny_request
from tests.old_loop import WanI2VPipeline, old_generate
from videojobs.params import DEFAULT_NEGATIVE_PROMPT, SAMPLE_SOLVERS

# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("solver", SAMPLE_SOLVERS)
def test_each_solver_produces_requested_frames_and_size(tiny_components: WanComponents, solver: str) -> None:
    result = run_on_cpu(tiny_components, tiny_request(width=96, height=64, sample_solver=solver))
    assert result.frames.shape == (9, 64, 96, 3)
    assert result.frames.dtype == np.uint8


def test_same_seed_gives_identical_frames(tiny_components: WanComponents) -> None:
    first = run_on_cpu(tiny_components, tiny_request(seed=123))
    second = run_on_cpu(tiny_components, tiny_request(seed=123))
    np.testing.assert_array_equal(first.frames, second.frames)


def test_different_seeds_give_different_frames(tiny_components: WanComponents) -> None:
    first = run_on_cpu(tiny_components, tiny_request(seed=1))
    second = run_on_cpu(tiny_components, tiny_request(seed=2))
    assert not np.array_equal(first.frames, second.frames)


def test_frames_match_diffusers_own_end_to_end_output(tiny_components: WanComponents) -> None:
    # Our loop, with its own encoding and decoding, must not change the result compared with
    # letting the diffusers pipeline do everything itself, except CLIP's view: diffusers shows
    # CLIP a centre crop, we show it the whole frame stretched the Wan way (issue 19), so the
    # pipeline gets those image embeddings.
    request = tiny_request(seed=5, infer_steps=3)
    ours = run_on_cpu(tiny_components, request)

    import torch

    condition = prepare_condition_image(request.image, request.width, request.height)
    pipe = WanI2VPipeline(**tiny_components.as_diffusers_components())
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(tiny_components.scheduler_config, request.sample_solver, request.sample_shift)
    clip_input = clip_pixels(pipe.image_processor, frame_pixels(condition, torch.device("cpu")), pipe.image_encoder.dtype)
    with torch.inference_mode():
        image_embeds = pipe.image_encoder(pixel_values=clip_input, output_hidden_states=True).hidden_states[-2]
    video = pipe(
        image=condition,
        image_embeds=image_embeds,
        prompt=request.prompt,
        negative_prompt=DEFAULT_NEGATIVE_PROMPT,
        height=request.height,
        width=request.width,
        num_frames=request.num_frames,
        num_inference_steps=request.infer_steps,
        guidance_scale=request.guidance_scale,
        generator=torch.Generator(device="cpu").manual_seed(request.seed),
        output_type="np",
    ).frames[0]
    theirs = np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(ours.frames, theirs)
    # The pipeline's own set_timesteps call ran on Wan's grid too (make_scheduler's subclasses),
    # so this still compares our loop with the library's stepping on the same grid.
    wan_sigmas, wan_timesteps = wan_grid(request.sample_solver, request.infer_steps, request.sample_shift, 1000)
    np.testing.assert_array_equal(pipe.scheduler.sigmas.numpy(), wan_sigmas)
    np.testing.assert_array_equal(pipe.scheduler.timesteps.numpy(), wan_timesteps)


@pytest.mark.parametrize("solver", SAMPLE_SOLVERS)
@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_new_loop_matches_the_old_pipeline_call_exactly(tiny_components: WanComponents, solver: str, guidance: float) -> None:
    request = tiny_request(seed=11, infer_steps=3, sample_solver=solver, guidance_scale=guidance, negative_prompt="blurry")
    old_steps: list[int] = []
    # The distilled sampler never applies guidance: the old call runs it with guidance 1.
    unguided = dataclasses.replace(request, guidance_scale=1.0) if solver == "distill" else request
    old = old_generate(tiny_components.as_diffusers_components(), unguided, old_steps)
    new_steps: list[tuple[int, int]] = []
    new = run_on_cpu(tiny_components, request, JobHooks(step=lambda done, total: new_steps.append((done, total))))
    np.testing.assert_array_equal(new.frames, old)
    assert [done for done, _ in new_steps] == old_steps == [1, 2, 3]


def test_phases_are_reported_in_order_and_timed(tiny_components: WanComponents) -> None:
    phases: list[str] = []
    result = run_on_cpu(tiny_components, tiny_request(), JobHooks(phase=phases.append))
    assert phases == ["encoding", "denoising", "decoding"]
    assert list(result.timings) == ["encoding", "denoising", "decoding"]
    assert all(seconds >= 0.0 for seconds in result.timings.values())


def test_step_hook_is_called_once_per_step_in_order(tiny_components: WanComponents) -> None:
    steps: list[tuple[int, int]] = []
    run_on_cpu(tiny_components, tiny_request(infer_steps=4), JobHooks(step=lambda step, total: steps.append((step, total))))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_chunk_hook_runs_between_vae_chunks_of_the_encode_and_the_decode(tiny_components: WanComponents) -> None:
    chunks: list[tuple[str, int, int]] = []
    run_on_cpu(tiny_components, tiny_request(num_frames=9), JobHooks(chunk=lambda phase, done, total: chunks.append((phase, done, total))))
    # 9 frames: the encode takes the first frame, then 4 at a time (3 chunks); the decode
    # goes latent frame by latent frame (3 of them).
    assert chunks == [("encoding", 1, 3), ("encoding", 2, 3), ("encoding", 3, 3),
                      ("decoding", 1, 3), ("decoding", 2, 3), ("decoding", 3, 3)]


class _Cancelled(Exception):
    pass


def test_exception_from_the_step_hook_stops_generation(tiny_components: WanComponents) -> None:
    phases: list[str] = []
    steps: list[int] = []
    cancel = _Cancelled("job 7 cancelled")

    def on_step(step: int, total: int) -> None:
        steps.append(step)
        if step == 2:
            raise cancel

    with pytest.raises(_Cancelled) as caught:
        run_on_cpu(tiny_components, tiny_request(infer_steps=4), JobHooks(phase=phases.append, step=on_step))
    assert caught.value is cancel
    assert steps == [1, 2]
    assert phases == ["encoding", "denoising"]


def test_a_stop_during_the_vae_decode_takes_effect_after_one_chunk(tiny_components: WanComponents) -> None:
    chunks: list[int] = []

    def on_chunk(phase: str, done: int, total: int) -> None:
        if phase == "decoding":
            chunks.append(done)
            raise _Cancelled()

    with pytest.raises(_Cancelled):
        run_on_cpu(tiny_components, tiny_request(num_frames=17), JobHooks(chunk=on_chunk))
    assert chunks == [1]  # one latent frame of 5 decoded, then stopped
    # The VAE's frame cache is cleared for the next job.
    assert all(entry is None for entry in tiny_components.vae._feat_map)


def test_a_stop_at_a_phase_boundary_skips_the_phase(tiny_components: WanComponents) -> None:
    steps: list[int] = []

    def on_phase(phase: str) -> None:
        if phase == "denoising":
            raise _Cancelled()

    with pytest.raises(_Cancelled):
        run_on_cpu(tiny_components, tiny_request(), JobHooks(phase=on_phase, step=lambda done, total: steps.append(done)))
    assert steps == []


def test_components_are_reusable_after_a_cancelled_job(tiny_components: WanComponents) -> None:
    def cancel_at_once(step: int, total: int) -> None:
        raise _Cancelled()

    with pytest.raises(_Cancelled):
        run_on_cpu(tiny_components, tiny_request(sample_solver="euler"), JobHooks(step=cancel_at_once))
    baseline = run_on_cpu(tiny_components, tiny_request(seed=9))
    again = run_on_cpu(tiny_components, tiny_request(seed=9))
    np.testing.assert_array_equal(baseline.frames, again.frames)




# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_frames": 8}, r"num_frames must be 4k\+1 \(e.g. 5 or 9\), got 8"),
        ({"num_frames": 0}, r"num_frames must be 4k\+1"),
        ({"width": 70}, r"width must be a positive multiple of 16, got 70"),
        ({"height": 0}, r"height must be a positive multiple of 16, got 0"),
        ({"sample_solver": "ddim"}, r"sample_solver must be one of unipc, dpm\+\+, euler, distill, got 'ddim'"),
        ({"infer_steps": 0}, r"infer_steps must be >= 1, got 0"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*64 - 1\], got -1"),
        ({"sample_shift": 0.0}, r"sample_shift must be a finite number > 0, got 0.0"),
        ({"guidance_scale": float("nan")}, r"guidance_scale must be a finite number >= 0"),
        ({"prompt": "  "}, r"prompt must be a non-empty string"),
        ({"image": b"not an image"}, r"image must be a PIL.Image.Image, got bytes"),
    ],
)
def test_invalid_requests_are_rejected_before_any_work(
    tiny_components: WanComponents, overrides: dict[str, Any], message: str
) -> None:
    phases: list[str] = []
    with pytest.raises(ValueError, match=message):
        run_on_cpu(tiny_components, tiny_request(**overrides), JobHooks(phase=phases.append))
    assert phases == []


def test_components_not_built_by_the_loader_are_rejected(tiny_components: WanComponents) -> None:
    plain = WanImageToVideoPipeline(**tiny_components.as_diffusers_components())
    with pytest.raises(TypeError, match=r"components must come from inference.pipeline.loading"):
        run_on_cpu(plain, tiny_request())  # type: ignore[arg-type]
