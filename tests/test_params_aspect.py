"""aspect "auto": the video's size from the image's aspect ratio at image_size's area, rounded as
the official Wan2.1 I2V code rounds it (issue 19, item 5); "crop" keeps image_size exactly."""
from __future__ import annotations

import numpy as np
import pytest

from videojobs import params as P


def official_size(image_width: int, image_height: int, max_area: int) -> tuple[int, int]:
    """Wan-Video/Wan2.1 at 9737cba, wan/image2video.py WanI2V.generate, with the I2V config's
    vae_stride (4, 8, 8) and patch_size (1, 2, 2) (wan/configs/wan_i2v_14B.py), in numpy as there:
        aspect_ratio = h / w
        lat_h = round(np.sqrt(max_area * aspect_ratio) // vae_stride[1] // patch_size[1] * patch_size[1])
        lat_w = round(np.sqrt(max_area / aspect_ratio) // vae_stride[2] // patch_size[2] * patch_size[2])
        h, w = lat_h * vae_stride[1], lat_w * vae_stride[2]
    """
    aspect_ratio = image_height / image_width
    lat_h = round(np.sqrt(max_area * aspect_ratio) // 8 // 2 * 2)
    lat_w = round(np.sqrt(max_area / aspect_ratio) // 8 // 2 * 2)
    return int(lat_w * 8), int(lat_h * 8)


IMAGES = {
    "landscape 16:9": (1920, 1080),
    "landscape 4:3": (1024, 768),
    "landscape odd": (1001, 667),
    "portrait 9:16": (1080, 1920),
    "portrait 3:4": (768, 1024),
    "portrait phone": (1179, 2556),
    "square": (1000, 1000),
    "square small": (64, 64),
}
AREAS = {"1280*720": 1280 * 720, "832*480": 832 * 480, "64*64": 64 * 64}


@pytest.mark.parametrize("image", IMAGES.values(), ids=IMAGES.keys())
@pytest.mark.parametrize("image_size", AREAS.keys())
def test_auto_size_follows_the_official_rounding(image: tuple[int, int], image_size: str) -> None:
    width, height = image
    expected = official_size(width, height, AREAS[image_size])
    got = P.output_size(image_size=image_size, aspect="auto", image_width=width, image_height=height)
    assert got == expected
    assert got[0] % 16 == 0 and got[1] % 16 == 0
    assert got[0] * got[1] <= AREAS[image_size]


@pytest.mark.parametrize(
    ("image", "image_size", "expected"),
    [
        # Worked by hand from the formula above: sqrt(921600 * 1080/1920) = 720 -> 90 -> 45 -> 90 latents -> 720.
        ((1920, 1080), "1280*720", (1280, 720)),
        ((1080, 1920), "1280*720", (720, 1280)),
        # sqrt(921600) = 960 on both sides of a square.
        ((1000, 1000), "1280*720", (960, 960)),
        # sqrt(399360 * 0.5625) = 473.97 -> 59.2 -> 29 -> 58 latents -> 464.
        ((1920, 1080), "832*480", (832, 464)),
    ],
)
def test_auto_sizes_of_landscape_portrait_and_square_images(image, image_size, expected) -> None:
    assert P.output_size(image_size=image_size, aspect="auto", image_width=image[0], image_height=image[1]) == expected


def test_crop_keeps_the_requested_size_whatever_the_image() -> None:
    for width, height in IMAGES.values():
        assert P.output_size(image_size="1280*720", aspect="crop", image_width=width, image_height=height) == (1280, 720)


def test_an_image_too_narrow_to_keep_whole_is_refused_naming_crop() -> None:
    with pytest.raises(ValueError, match='too narrow.*aspect "crop"'):
        P.output_size(image_size="64*64", aspect="auto", image_width=2, image_height=400)


def test_an_unknown_aspect_is_refused() -> None:
    with pytest.raises(ValueError, match="aspect must be one of crop, auto"):
        P.output_size(image_size="64*64", aspect="stretch", image_width=64, image_height=64)
