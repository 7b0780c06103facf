"""inference.generate (our own loop) on the tiny checkpoint, on the CPU, at tiny sizes."""
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

from inference.devices import resolve_device
from inference.generate import (
    GenerationRequest,
    GenerationResult,
    JobHooks,
    generate,
    make_scheduler,
    prepare_condition_image,
)
from inference.parallel.context import ParallelContext
from inference.pipeline import encode as encode_module
from inference.pipeline.components import WanComponents
from tests.old_loop import old_generate
from videojobs.params import DEFAULT_NEGATIVE_PROMPT, SAMPLE_SOLVERS


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


def _run(components: WanComponents, request: GenerationRequest, hooks: JobHooks | None = None) -> GenerationResult:
    return generate(components, request, ctx=ParallelContext.single(resolve_device("cpu")), hooks=hooks)


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("solver", SAMPLE_SOLVERS)
def test_each_solver_produces_requested_frames_and_size(tiny_components: WanComponents, solver: str) -> None:
    result = _run(tiny_components, _request(width=96, height=64, sample_solver=solver))
    assert result.frames.shape == (9, 64, 96, 3)
    assert result.frames.dtype == np.uint8


def test_same_seed_gives_identical_frames(tiny_components: WanComponents) -> None:
    first = _run(tiny_components, _request(seed=123))
    second = _run(tiny_components, _request(seed=123))
    np.testing.assert_array_equal(first.frames, second.frames)


def test_different_seeds_give_different_frames(tiny_components: WanComponents) -> None:
    first = _run(tiny_components, _request(seed=1))
    second = _run(tiny_components, _request(seed=2))
    assert not np.array_equal(first.frames, second.frames)


def test_frames_match_diffusers_own_end_to_end_output(tiny_components: WanComponents) -> None:
    # Our loop, with its own encoding and decoding, must not change the result compared with
    # letting the diffusers pipeline do everything itself.
    request = _request(seed=5, infer_steps=3)
    ours = _run(tiny_components, request)

    import torch

    condition = prepare_condition_image(request.image, request.width, request.height)
    pipe = WanImageToVideoPipeline(**tiny_components.as_diffusers_components())
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(tiny_components.scheduler_config, request.sample_solver, request.sample_shift)
    video = pipe(
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
    theirs = np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(ours.frames, theirs)


@pytest.mark.parametrize("solver", SAMPLE_SOLVERS)
@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_new_loop_matches_the_old_pipeline_call_exactly(tiny_components: WanComponents, solver: str, guidance: float) -> None:
    request = _request(seed=11, infer_steps=3, sample_solver=solver, guidance_scale=guidance, negative_prompt="blurry")
    old_steps: list[int] = []
    old = old_generate(tiny_components.as_diffusers_components(), request, old_steps)
    new_steps: list[tuple[int, int]] = []
    new = _run(tiny_components, request, JobHooks(step=lambda done, total: new_steps.append((done, total))))
    np.testing.assert_array_equal(new.frames, old)
    assert [done for done, _ in new_steps] == old_steps == [1, 2, 3]


def test_phases_are_reported_in_order_and_timed(tiny_components: WanComponents) -> None:
    phases: list[str] = []
    result = _run(tiny_components, _request(), JobHooks(phase=phases.append))
    assert phases == ["encoding", "denoising", "decoding"]
    assert list(result.timings) == ["encoding", "denoising", "decoding"]
    assert all(seconds >= 0.0 for seconds in result.timings.values())


def test_step_hook_is_called_once_per_step_in_order(tiny_components: WanComponents) -> None:
    steps: list[tuple[int, int]] = []
    _run(tiny_components, _request(infer_steps=4), JobHooks(step=lambda step, total: steps.append((step, total))))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_chunk_hook_runs_between_vae_chunks_of_the_encode_and_the_decode(tiny_components: WanComponents) -> None:
    chunks: list[tuple[str, int, int]] = []
    _run(tiny_components, _request(num_frames=9), JobHooks(chunk=lambda phase, done, total: chunks.append((phase, done, total))))
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
        _run(tiny_components, _request(infer_steps=4), JobHooks(phase=phases.append, step=on_step))
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
        _run(tiny_components, _request(num_frames=17), JobHooks(chunk=on_chunk))
    assert chunks == [1]  # one latent frame of 5 decoded, then stopped
    # The VAE's frame cache is cleared for the next job.
    assert all(entry is None for entry in tiny_components.vae._feat_map)


def test_a_stop_at_a_phase_boundary_skips_the_phase(tiny_components: WanComponents) -> None:
    steps: list[int] = []

    def on_phase(phase: str) -> None:
        if phase == "denoising":
            raise _Cancelled()

    with pytest.raises(_Cancelled):
        _run(tiny_components, _request(), JobHooks(phase=on_phase, step=lambda done, total: steps.append(done)))
    assert steps == []


def test_components_are_reusable_after_a_cancelled_job(tiny_components: WanComponents) -> None:
    def cancel_at_once(step: int, total: int) -> None:
        raise _Cancelled()

    with pytest.raises(_Cancelled):
        _run(tiny_components, _request(sample_solver="euler"), JobHooks(step=cancel_at_once))
    baseline = _run(tiny_components, _request(seed=9))
    again = _run(tiny_components, _request(seed=9))
    np.testing.assert_array_equal(baseline.frames, again.frames)


# --------------------------------------------------------------------------- prompts


def _spy_on_t5(monkeypatch: pytest.MonkeyPatch, components: WanComponents | None = None) -> list[str]:
    from inference.cache.prompts import PromptCache

    if components is not None:  # no cache: every text reaches the encoder
        monkeypatch.setattr(components, "prompts", PromptCache(capacity=0, pinned=()))
    texts: list[str] = []
    original = encode_module._t5

    def spy(components: Any, text: str, device: Any) -> Any:
        texts.append(text)
        return original(components, text, device)

    monkeypatch.setattr(encode_module, "_t5", spy)
    return texts


@pytest.mark.parametrize("negative", [None, "", "   "])
def test_empty_negative_prompt_uses_wan_default(
    tiny_components: WanComponents, monkeypatch: pytest.MonkeyPatch, negative: str | None
) -> None:
    texts = _spy_on_t5(monkeypatch, tiny_components)
    _run(tiny_components, _request(negative_prompt=negative, infer_steps=1))
    assert texts == ["a cat walks across a sunny garden", DEFAULT_NEGATIVE_PROMPT]


def test_given_negative_prompt_is_used(tiny_components: WanComponents, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _spy_on_t5(monkeypatch, tiny_components)
    _run(tiny_components, _request(negative_prompt="blurry, static", infer_steps=1))
    assert texts[1] == "blurry, static"


def test_guidance_of_one_skips_the_negative_prompt(
    tiny_components: WanComponents, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _spy_on_t5(monkeypatch, tiny_components)
    result = _run(tiny_components, _request(guidance_scale=1.0, infer_steps=1))
    assert texts == ["a cat walks across a sunny garden"]
    assert result.frames.shape == (9, 64, 64, 3)


def test_the_prompt_cache_serves_a_repeated_prompt_without_the_encoder(
    tiny_components: WanComponents, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.cache.prompts import PromptCache

    monkeypatch.setattr(tiny_components, "prompts", PromptCache(capacity=4))
    texts = _spy_on_t5(monkeypatch)
    first = _run(tiny_components, _request(prompt="a red car drives at night", infer_steps=1))
    second = _run(tiny_components, _request(prompt="a red car drives at night", infer_steps=1))
    # The prompt and the default negative prompt were each encoded once, then served.
    assert texts == ["a red car drives at night", DEFAULT_NEGATIVE_PROMPT]
    assert (first.acceleration["prompt_cache_hits"], second.acceleration["prompt_cache_hits"]) == (0, 2)
    np.testing.assert_array_equal(first.frames, second.frames)


def test_the_prompt_cache_evicts_the_oldest_but_keeps_the_default_negative(tiny_components: WanComponents) -> None:
    import torch

    from inference.cache.prompts import PromptCache

    cache = PromptCache(capacity=2)
    for text in ("one", DEFAULT_NEGATIVE_PROMPT, "two", "three"):
        cache.put(text, torch.zeros(1))
    assert cache.get("one") is None and cache.get("two") is not None and cache.get("three") is not None
    assert cache.get(DEFAULT_NEGATIVE_PROMPT) is not None and len(cache) == 3


def test_prompts_are_padded_to_512_tokens(tiny_components: WanComponents, cpu_ctx) -> None:  # noqa: F811
    (embeds,) = encode_module.encode_texts(tiny_components, ["a red car"], cpu_ctx)
    assert embeds.shape == (1, 512, tiny_components.text_encoder.config.d_model)
    assert embeds[0, 4:].abs().max() == 0  # three words and </s>, then zeros


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
    tiny_components: WanComponents, overrides: dict[str, Any], message: str
) -> None:
    phases: list[str] = []
    with pytest.raises(ValueError, match=message):
        _run(tiny_components, _request(**overrides), JobHooks(phase=phases.append))
    assert phases == []


def test_components_not_built_by_the_loader_are_rejected(tiny_components: WanComponents) -> None:
    plain = WanImageToVideoPipeline(**tiny_components.as_diffusers_components())
    with pytest.raises(TypeError, match=r"components must come from inference.pipeline.loading"):
        _run(plain, _request())  # type: ignore[arg-type]


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
    tiny_components: WanComponents, solver: str, cls: type
) -> None:
    first = make_scheduler(tiny_components.scheduler_config, solver, 3.0)
    second = make_scheduler(tiny_components.scheduler_config, solver, 3.0)
    assert type(first) is cls
    assert first is not second
    assert first.config.num_train_timesteps == 1000


def test_flow_solvers_apply_the_requested_shift(tiny_components: WanComponents) -> None:
    unipc = make_scheduler(tiny_components.scheduler_config, "unipc", 3.0)
    assert (unipc.config.prediction_type, unipc.config.use_flow_sigmas) == ("flow_prediction", True)
    assert unipc.config.flow_shift == 3.0
    dpm = make_scheduler(tiny_components.scheduler_config, "dpm++", 7.0)
    assert (dpm.config.algorithm_type, dpm.config.solver_order, dpm.config.flow_shift) == ("dpmsolver++", 2, 7.0)
    assert (dpm.config.prediction_type, dpm.config.use_flow_sigmas) == ("flow_prediction", True)
    euler = make_scheduler(tiny_components.scheduler_config, "euler", 4.0)
    assert euler.config.shift == 4.0


@pytest.mark.parametrize("solver", SAMPLE_SOLVERS)
def test_every_solver_runs_from_pure_noise_to_clean_and_a_larger_shift_keeps_more_noise(
    tiny_components: WanComponents, solver: str
) -> None:
    def sigmas(shift: float) -> np.ndarray:
        scheduler = make_scheduler(tiny_components.scheduler_config, solver, shift)
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
        "guidance_scale", "infer_steps", "seed", "sample_solver", "sample_shift", "cache",
    ]
