"""What CLIP sees of the condition frame (issue 19, item 4), on the tiny checkpoint on the CPU.

The official Wan2.1 I2V code (Wan-Video/Wan2.1 at 9737cba, wan/modules/clip.py, CLIPModel.visual,
called from wan/image2video.py) takes the image as a tensor in [-1, 1], stretches the whole of it
to CLIP's 224 x 224 with torch.nn.functional.interpolate(mode="bicubic", align_corners=False),
maps it to [0, 1] and normalises it with CLIP's mean and std. There is no centre crop. These
tests rebuild that tensor independently and compare it with what our CLIP encoder receives."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from inference.generate import prepare_condition_image
from inference.pipeline.components import WanComponents
from inference.pipeline.encode import encode_image
from tests.generate_support import random_image, run_on_cpu, tiny_request


def _capture_clip_input(components: WanComponents) -> tuple[list[torch.Tensor], Any]:
    """Record the pixel_values every call of the CLIP encoder receives."""
    seen: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append((kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]).detach().clone())

    return seen, components.image_encoder.register_forward_pre_hook(hook, with_kwargs=True)


def _clip_input(components: WanComponents, frame: PIL.Image.Image, cpu_ctx: Any) -> torch.Tensor:
    seen, handle = _capture_clip_input(components)
    try:
        encode_image(components, frame, cpu_ctx)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


def _official_stretch(frame: PIL.Image.Image, mean: tuple[float, ...], std: tuple[float, ...], side: int) -> torch.Tensor:
    """The whole frame, in [-1, 1], bicubically stretched to side x side, then to [0, 1] and normalised."""
    pixels = torch.from_numpy(np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0)
    pixels = pixels.permute(2, 0, 1).unsqueeze(0).sub(0.5).div(0.5)  # (1, 3, H, W) in [-1, 1]
    stretched = F.interpolate(pixels, size=(side, side), mode="bicubic", align_corners=False)
    unit = stretched.mul(0.5).add(0.5)
    return (unit - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("size", [(160, 90), (90, 160), (96, 96)], ids=["landscape", "portrait", "square"])
def test_clip_input_is_a_bicubic_stretch_of_the_whole_frame(
    tiny_components: WanComponents, cpu_ctx: Any, size: tuple[int, int]
) -> None:
    frame = random_image(*size)
    processor = tiny_components.image_processor
    expected = _official_stretch(frame, processor.image_mean, processor.image_std, 224)
    got = _clip_input(tiny_components, frame, cpu_ctx)
    assert got.shape == (1, 3, 224, 224)
    assert got.dtype == tiny_components.image_encoder.dtype
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _red_edges_green_centre(width: int, height: int) -> PIL.Image.Image:
    """Green, with a red band of an eighth of the width on the left and right edges."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 1] = 255
    band = width // 8
    pixels[:, :band] = (255, 0, 0)
    pixels[:, width - band:] = (255, 0, 0)
    return PIL.Image.fromarray(pixels, mode="RGB")


def test_clip_sees_the_edges_of_a_wide_frame(tiny_components: WanComponents, cpu_ctx: Any) -> None:
    # A centre crop of a 16:9 frame keeps its middle 56%, so the red bands would vanish.
    processor = tiny_components.image_processor
    got = _clip_input(tiny_components, _red_edges_green_centre(160, 90), cpu_ctx)
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    rgb = (got * std + mean)[0]  # (3, 224, 224) in [0, 1]
    for column in (0, 10, 213, 223):  # inside the bands: 224 / 8 = 28 columns each
        assert torch.allclose(rgb[:, :, column].mean(dim=1), torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
    assert torch.allclose(rgb[:, :, 112].mean(dim=1), torch.tensor([0.0, 1.0, 0.0]), atol=1e-3)


def test_clip_uses_the_checkpoints_mean_and_std(tiny_components: WanComponents, cpu_ctx: Any) -> None:
    # A real checkpoint's image_processor config supplies CLIP's normalisation; it is read, not assumed.
    processor = copy.deepcopy(tiny_components.image_processor)
    processor.image_mean = [0.5, 0.25, 0.125]
    processor.image_std = [0.5, 0.4, 0.3]
    components = dataclasses.replace(tiny_components, image_processor=processor)
    frame = random_image(120, 80)
    expected = _official_stretch(frame, (0.5, 0.25, 0.125), (0.5, 0.4, 0.3), 224)
    torch.testing.assert_close(_clip_input(components, frame, cpu_ctx), expected, atol=1e-5, rtol=0)


def test_generate_shows_clip_the_condition_frame_the_vae_encodes(tiny_components: WanComponents) -> None:
    # A 4:3 upload at 64 x 48: CLIP gets the frame after our cover-and-crop, stretched, not the upload.
    request = tiny_request(image=random_image(200, 100), width=64, height=48, infer_steps=1)
    frame = prepare_condition_image(request.image, request.width, request.height)
    processor = tiny_components.image_processor
    expected = _official_stretch(frame, processor.image_mean, processor.image_std, 224)
    seen, handle = _capture_clip_input(tiny_components)
    try:
        run_on_cpu(tiny_components, request)
    finally:
        handle.remove()
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("config", [
    {"do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 224}},
    {"do_center_crop": False, "size": {"shortest_edge": 224}},
    {"do_center_crop": False, "size": {"height": 224, "width": 224}},
], ids=["crop", "shortest-edge-no-crop", "height-width-no-crop"])
def test_clip_stretch_does_not_depend_on_the_processors_resize_settings(
    tiny_components: WanComponents, cpu_ctx: Any, config: dict
) -> None:
    # Whatever resize or crop a checkpoint's image_processor config asks for, CLIP gets the stretch.
    processor = type(tiny_components.image_processor)(**{**tiny_components.image_processor.to_dict(), **config})
    components = dataclasses.replace(tiny_components, image_processor=processor)
    frame = random_image(160, 96)
    expected = _official_stretch(frame, processor.image_mean, processor.image_std, 224)
    torch.testing.assert_close(_clip_input(components, frame, cpu_ctx), expected, atol=1e-5, rtol=0)
