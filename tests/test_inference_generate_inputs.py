"""inference.generate's inputs on the tiny checkpoint, on the CPU: the prompts (Wan's default
negative prompt, the prompt cache, padding), the schedulers and the condition image."""
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
)

from inference.generate import (
    GenerationRequest,
    make_scheduler,
    prepare_condition_image,
)
from inference.pipeline import encode as encode_module
from inference.pipeline.components import WanComponents
from tests.generate_support import random_image, run_on_cpu, tiny_request
from videojobs.params import DEFAULT_NEGATIVE_PROMPT, SAMPLE_SOLVERS

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
    run_on_cpu(tiny_components, tiny_request(negative_prompt=negative, infer_steps=1))
    assert texts == ["a cat walks across a sunny garden", DEFAULT_NEGATIVE_PROMPT]


def test_given_negative_prompt_is_used(tiny_components: WanComponents, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _spy_on_t5(monkeypatch, tiny_components)
    run_on_cpu(tiny_components, tiny_request(negative_prompt="blurry, static", infer_steps=1))
    assert texts[1] == "blurry, static"


def test_guidance_of_one_skips_the_negative_prompt(
    tiny_components: WanComponents, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _spy_on_t5(monkeypatch, tiny_components)
    result = run_on_cpu(tiny_components, tiny_request(guidance_scale=1.0, infer_steps=1))
    assert texts == ["a cat walks across a sunny garden"]
    assert result.frames.shape == (9, 64, 64, 3)


def test_the_prompt_cache_serves_a_repeated_prompt_without_the_encoder(
    tiny_components: WanComponents, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.cache.prompts import PromptCache

    monkeypatch.setattr(tiny_components, "prompts", PromptCache(capacity=4))
    texts = _spy_on_t5(monkeypatch)
    first = run_on_cpu(tiny_components, tiny_request(prompt="a red car drives at night", infer_steps=1))
    second = run_on_cpu(tiny_components, tiny_request(prompt="a red car drives at night", infer_steps=1))
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
    assert isinstance(first, cls)  # unipc and dpm++: diffusers' stepping on Wan's grid (subclasses)
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
        scheduler.set_timesteps(4 if solver == "distill" else 10)  # distill takes 1-8 steps
        return np.asarray(scheduler.sigmas, dtype=np.float64)  # (N + 1,) ending with 0

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
    image = random_image(96, 64)
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
        "guidance_scale", "infer_steps", "seed", "sample_solver", "sample_shift", "cache", "aspect", "loras",
    ]
