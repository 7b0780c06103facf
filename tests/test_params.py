"""The generation vocabulary's defaults follow the official Wan2.1 I2V code (issue 19, items 3 and 6)."""
from __future__ import annotations

import pytest

from videojobs import params as P

# wan/configs/shared_config.py sample_neg_prompt, with the prefix wan/configs/wan_i2v_14B.py adds.
WAN_I2V_NEGATIVE_PROMPT = (
    "镜头晃动，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


def test_default_negative_prompt_is_wans_i2v_one_with_the_camera_shake_prefix() -> None:
    assert P.DEFAULT_NEGATIVE_PROMPT == WAN_I2V_NEGATIVE_PROMPT
    assert P.DEFAULT_NEGATIVE_PROMPT.startswith("镜头晃动，色调艳丽，")


@pytest.mark.parametrize(
    ("image_size", "shift"),
    [
        # wan/generate.py: 3.0 for the 480p sizes, 5.0 (the config's) for 720p.
        ("832*480", 3.0), ("480*832", 3.0), ("1280*720", 5.0), ("720*1280", 5.0),
        # Other sizes by area: at or below 832*480's area 3.0, above it 5.0.
        ("64*64", 3.0), ("96*64", 3.0), ("640*624", 3.0), ("640*640", 5.0), ("960*540", 5.0),
    ],
)
def test_default_shift_is_the_official_one_for_the_size(image_size: str, shift: float) -> None:
    assert P.default_shift(image_size) == shift
