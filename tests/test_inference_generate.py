"""inference.generate on the tiny checkpoint, on the CPU, at tiny sizes."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import PIL.Image
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
)

from inference.devices import DeviceSpec, resolve_device
from inference.generate import (
    GenerationRequest,
    GenerationResult,
    generate,
    make_scheduler,
    prepare_condition_image,
)
from tests.inference_fixtures import tiny_ckpt, tiny_pipe  # noqa: F401
from videojobs.params import DEFAULT_NEGATIVE_PROMPT, SAMPLE_SOLVERS

CPU: DeviceSpec = resolve_device("cpu")


def _image(width: int = 120, height: int = 80) -> PIL.Image.Image:
    pixels = np.random.default_rng(7).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels, mode="RGB")


def _request(**overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "prompt": "a cat walks across a sunny garden",
        "negative_prompt": None,
        "image": _image(),
        "width": 64,
        "height": 64,
        "num_frames": 9,
        "guidance_scale": 5.0,
        "infer_steps": 2,
        "seed": 42,
        "sample_solver": "unipc",
        "sample_shift": 5.0,
    }
    fields.update(overrides)
    return GenerationRequest(**fields)


def _run(pipe: WanImageToVideoPipeline, request: GenerationRequest) -> GenerationResult:
    return generate(pipe, request, device=CPU, on_phase=lambda phase: None, on_step=lambda step, total: None)


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("solver", SAMPLE_SOLVERS)
def test_each_solver_produces_requested_frames_and_size(tiny_pipe: WanImageToVideoPipeline, solver: str) -> None:
    result = _run(tiny_pipe, _request(width=96, height=64, sample_solver=solver))
    assert result.frames.shape == (9, 64, 96, 3)
    assert result.frames.dtype == np.uint8


def test_same_seed_gives_identical_frames(tiny_pipe: WanImageToVideoPipeline) -> None:
    first = _run(tiny_pipe, _request(seed=123))
    second = _run(tiny_pipe, _request(seed=123))
    np.testing.assert_array_equal(first.frames, second.frames)


def test_different_seeds_give_different_frames(tiny_pipe: WanImageToVideoPipeline) -> None:
    first = _run(tiny_pipe, _request(seed=1))
    second = _run(tiny_pipe, _request(seed=2))
    assert not np.array_equal(first.frames, second.frames)


def test_frames_match_diffusers_own_end_to_end_output(tiny_pipe: WanImageToVideoPipeline) -> None:
    # Our split into phases (precomputed embeddings, our own decode) must not change the
    # result compared with letting the diffusers pipeline do everything itself.
    request = _request(seed=5, infer_steps=3)
    ours = _run(tiny_pipe, request)

    import torch

    condition = prepare_condition_image(request.image, request.width, request.height)
    checkpoint_scheduler = tiny_pipe.scheduler
    tiny_pipe.scheduler = make_scheduler(checkpoint_scheduler.config, request.sample_solver, request.sample_shift)
    try:
        video = tiny_pipe(
            image=condition,
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
    finally:
        tiny_pipe.scheduler = checkpoint_scheduler
    theirs = np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(ours.frames, theirs)


def test_phases_are_reported_in_order_and_timed(tiny_pipe: WanImageToVideoPipeline) -> None:
    phases: list[str] = []
    result = generate(tiny_pipe, _request(), device=CPU, on_phase=phases.append, on_step=lambda step, total: None)
    assert phases == ["encoding", "denoising", "decoding"]
    assert list(result.timings) == ["encoding", "denoising", "decoding"]
    assert all(seconds >= 0.0 for seconds in result.timings.values())


def test_on_step_is_called_once_per_step_in_order(tiny_pipe: WanImageToVideoPipeline) -> None:
    steps: list[tuple[int, int]] = []
    generate(tiny_pipe, _request(infer_steps=4), device=CPU, on_phase=lambda phase: None,
             on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


class _Cancelled(Exception):
    pass


def test_exception_from_on_step_stops_generation(tiny_pipe: WanImageToVideoPipeline) -> None:
    phases: list[str] = []
    steps: list[int] = []
    cancel = _Cancelled("job 7 cancelled")

    def on_step(step: int, total: int) -> None:
        steps.append(step)
        if step == 2:
            raise cancel

    with pytest.raises(_Cancelled) as caught:
        generate(tiny_pipe, _request(infer_steps=4), device=CPU, on_phase=phases.append, on_step=on_step)
    assert caught.value is cancel
    assert steps == [1, 2]
    assert phases == ["encoding", "denoising"]


def test_pipeline_is_reusable_after_a_cancelled_job(tiny_pipe: WanImageToVideoPipeline) -> None:
    checkpoint_scheduler = tiny_pipe.scheduler

    def cancel_at_once(step: int, total: int) -> None:
        raise _Cancelled()

    with pytest.raises(_Cancelled):
        generate(
            tiny_pipe, _request(sample_solver="euler"), device=CPU, on_phase=lambda p: None, on_step=cancel_at_once
        )
    assert tiny_pipe.scheduler is checkpoint_scheduler
    baseline = _run(tiny_pipe, _request(seed=9))
    again = _run(tiny_pipe, _request(seed=9))
    np.testing.assert_array_equal(baseline.frames, again.frames)


# --------------------------------------------------------------------------- prompts


def _spy_on_encode_prompt(monkeypatch: pytest.MonkeyPatch, pipe: WanImageToVideoPipeline) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    original = pipe.encode_prompt

    def spy(**kwargs: Any) -> Any:
        # The pipeline calls encode_prompt again with our embeddings; only real encodes count.
        if kwargs.get("prompt") is not None:
            calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", spy)
    return calls


@pytest.mark.parametrize("negative", [None, "", "   "])
def test_empty_negative_prompt_uses_wan_default(
    tiny_pipe: WanImageToVideoPipeline, monkeypatch: pytest.MonkeyPatch, negative: str | None
) -> None:
    calls = _spy_on_encode_prompt(monkeypatch, tiny_pipe)
    _run(tiny_pipe, _request(negative_prompt=negative, infer_steps=1))
    assert [call["negative_prompt"] for call in calls] == [DEFAULT_NEGATIVE_PROMPT]
    assert calls[0]["max_sequence_length"] == 512


def test_given_negative_prompt_is_used(tiny_pipe: WanImageToVideoPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_on_encode_prompt(monkeypatch, tiny_pipe)
    _run(tiny_pipe, _request(negative_prompt="blurry, static", infer_steps=1))
    assert calls[0]["negative_prompt"] == "blurry, static"


def test_guidance_of_one_skips_the_negative_prompt(
    tiny_pipe: WanImageToVideoPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_on_encode_prompt(monkeypatch, tiny_pipe)
    result = _run(tiny_pipe, _request(guidance_scale=1.0, infer_steps=1))
    assert calls[0]["do_classifier_free_guidance"] is False
    assert result.frames.shape == (9, 64, 64, 3)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_frames": 8}, r"num_frames must be 4k\+1 \(e.g. 5 or 9\), got 8"),
        ({"num_frames": 0}, r"num_frames must be 4k\+1"),
        ({"width": 70}, r"width must be a positive multiple of 16, got 70"),
        ({"height": 0}, r"height must be a positive multiple of 16, got 0"),
        ({"sample_solver": "ddim"}, r"sample_solver must be one of unipc, dpm\+\+, euler, got 'ddim'"),
        ({"infer_steps": 0}, r"infer_steps must be >= 1, got 0"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*64 - 1\], got -1"),
        ({"sample_shift": 0.0}, r"sample_shift must be a finite number > 0, got 0.0"),
        ({"guidance_scale": float("nan")}, r"guidance_scale must be a finite number >= 0"),
        ({"prompt": "  "}, r"prompt must be a non-empty string"),
        ({"image": b"not an image"}, r"image must be a PIL.Image.Image, got bytes"),
    ],
)
def test_invalid_requests_are_rejected_before_any_work(
    tiny_pipe: WanImageToVideoPipeline, overrides: dict[str, Any], message: str
) -> None:
    phases: list[str] = []
    with pytest.raises(ValueError, match=message):
        generate(tiny_pipe, _request(**overrides), device=CPU, on_phase=phases.append, on_step=lambda s, t: None)
    assert phases == []


def test_a_pipeline_not_built_by_the_loader_is_rejected(tiny_pipe: WanImageToVideoPipeline) -> None:
    plain = WanImageToVideoPipeline(**tiny_pipe.components)
    with pytest.raises(TypeError, match=r"pipe must be loaded with inference.checkpoint.load_pipeline"):
        _run(plain, _request())


# --------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize(
    ("solver", "cls"),
    [
        ("unipc", UniPCMultistepScheduler),
        ("dpm++", DPMSolverMultistepScheduler),
        ("euler", FlowMatchEulerDiscreteScheduler),
    ],
)
def test_make_scheduler_returns_a_fresh_flow_scheduler_per_call(
    tiny_pipe: WanImageToVideoPipeline, solver: str, cls: type
) -> None:
    first = make_scheduler(tiny_pipe.scheduler.config, solver, 3.0)
    second = make_scheduler(tiny_pipe.scheduler.config, solver, 3.0)
    assert type(first) is cls
    assert first is not second
    assert first.config.num_train_timesteps == 1000


def test_flow_solvers_apply_the_requested_shift(tiny_pipe: WanImageToVideoPipeline) -> None:
    unipc = make_scheduler(tiny_pipe.scheduler.config, "unipc", 3.0)
    assert (unipc.config.prediction_type, unipc.config.use_flow_sigmas) == ("flow_prediction", True)
    assert unipc.config.flow_shift == 3.0
    dpm = make_scheduler(tiny_pipe.scheduler.config, "dpm++", 7.0)
    assert (dpm.config.algorithm_type, dpm.config.solver_order, dpm.config.flow_shift) == ("dpmsolver++", 2, 7.0)
    assert (dpm.config.prediction_type, dpm.config.use_flow_sigmas) == ("flow_prediction", True)
    euler = make_scheduler(tiny_pipe.scheduler.config, "euler", 4.0)
    assert euler.config.shift == 4.0


@pytest.mark.parametrize("solver", SAMPLE_SOLVERS)
def test_every_solver_runs_from_pure_noise_to_clean_and_a_larger_shift_keeps_more_noise(
    tiny_pipe: WanImageToVideoPipeline, solver: str
) -> None:
    def sigmas(shift: float) -> np.ndarray:
        scheduler = make_scheduler(tiny_pipe.scheduler.config, solver, shift)
        scheduler.set_timesteps(10)
        return np.asarray(scheduler.sigmas, dtype=np.float64)  # (11,) ending with 0

    low, high = sigmas(2.0), sigmas(8.0)
    for values in (low, high):
        assert values[0] == pytest.approx(1.0, abs=1e-3)
        assert values[-1] == 0.0
        assert (np.diff(values) < 0).all()
    assert (high[1:-1] > low[1:-1]).all()


def test_unknown_solver_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown sample solver 'ddim'; allowed values: unipc, dpm\+\+, euler"):
        make_scheduler({"num_train_timesteps": 1000}, "ddim", 5.0)


# --------------------------------------------------------------------------- condition image


def _stripes(width: int, height: int, horizontal: bool) -> PIL.Image.Image:
    """Red | green | blue bands, the green one covering the middle half."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    if horizontal:
        quarter = width // 4
        pixels[:, :quarter] = (255, 0, 0)
        pixels[:, quarter : width - quarter] = (0, 255, 0)
        pixels[:, width - quarter :] = (0, 0, 255)
    else:
        quarter = height // 4
        pixels[:quarter] = (255, 0, 0)
        pixels[quarter : height - quarter] = (0, 255, 0)
        pixels[height - quarter :] = (0, 0, 255)
    return PIL.Image.fromarray(pixels, mode="RGB")


@pytest.mark.parametrize(
    ("source", "target"), [((200, 100), (64, 64)), ((100, 400), (96, 64)), ((120, 600), (64, 128))]
)
def test_condition_image_is_resized_and_centre_cropped(source: tuple[int, int], target: tuple[int, int]) -> None:
    width, height = target
    horizontal = source[0] / source[1] > width / height
    image = _stripes(*source, horizontal=horizontal)
    result = prepare_condition_image(image, width, height)
    assert result.size == (width, height)
    assert result.mode == "RGB"
    # Covering then centre-cropping keeps the middle half: only green, away from the
    # resampling seams at the crop edges, and the centre is pure green.
    pixels = np.asarray(result).astype(int)
    inner = pixels[2:-2, 2:-2]
    assert (inner[..., 1] > inner[..., 0] + 100).all() and (inner[..., 1] > inner[..., 2] + 100).all()
    assert tuple(pixels[height // 2, width // 2]) == (0, 255, 0)


def test_condition_image_keeps_an_exact_size_image_unchanged() -> None:
    image = _image(96, 64)
    np.testing.assert_array_equal(np.asarray(prepare_condition_image(image, 96, 64)), np.asarray(image))


def test_condition_image_drops_transparency() -> None:
    image = PIL.Image.new("RGBA", (50, 30), (10, 20, 30, 0))
    result = prepare_condition_image(image, 32, 16)
    assert result.mode == "RGB" and result.size == (32, 16)


def test_request_is_a_plain_dataclass() -> None:
    # The daemon builds requests from job rows field by field.
    names = [field.name for field in dataclasses.fields(GenerationRequest)]
    assert names == [
        "prompt", "negative_prompt", "image", "width", "height", "num_frames",
        "guidance_scale", "infer_steps", "seed", "sample_solver", "sample_shift",
    ]
