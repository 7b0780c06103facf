"""Generation parameter vocabulary shared by the API (no torch) and the daemon.

Pure Python on purpose: the web process validates requests with these values and must
never import torch.
"""
from __future__ import annotations

import math
import re

SAMPLE_SOLVERS: tuple[str, ...] = ("unipc", "dpm++", "euler")

# The sizes Wan2.1-I2V-14B-720P was trained for ("WIDTH*HEIGHT", as in the original API).
SUPPORTED_IMAGE_SIZES: tuple[str, ...] = ("1280*720", "720*1280", "832*480", "480*832")

# Original contract ranges.
PROMPT_MIN_CHARS, PROMPT_MAX_CHARS = 10, 500
NEGATIVE_PROMPT_MAX_CHARS = 500
NUM_FRAMES_MIN, NUM_FRAMES_MAX, NUM_FRAMES_DEFAULT = 24, 120, 81
GUIDANCE_MIN, GUIDANCE_MAX, GUIDANCE_DEFAULT = 1.0, 20.0, 3.0
STEPS_MIN, STEPS_MAX, STEPS_DEFAULT = 20, 100, 30
SEED_MIN, SEED_MAX = 0, 2147483647
SHIFT_MIN, SHIFT_MAX, SHIFT_DEFAULT = 0.0, 20.0, 5.0
# The official wan/generate.py samples 480p (832*480, 480*832) with shift 3.0 and 720p with the
# config's 5.0; a request without sample_shift gets the value for its size (default_shift).
SHIFT_DEFAULT_480P = 3.0
SHIFT_480P_MAX_AREA = 832 * 480
IMAGE_SIZE_DEFAULT = "1280*720"
SOLVER_DEFAULT = "unipc"
ATTENTIONCACHE_DEFAULTS = {"start_step": 12, "attentioncache_interval": 4, "end_step": 37}
# Step caches: "attention" is the original's attention cache (use_attentioncache=true means
# it); "dbcache" is cache-dit's adaptive cache, reusing a step's blocks while the first blocks'
# residual changes by less than cache_threshold (relative).
CACHE_METHODS: tuple[str, ...] = ("none", "attention", "dbcache")
CACHE_THRESHOLD_MIN, CACHE_THRESHOLD_MAX, CACHE_THRESHOLD_DEFAULT = 0.0, 1.0, 0.08


def parse_image_size(value: str) -> tuple[int, int]:
    """"1280*720" -> (1280, 720), i.e. (width, height)."""
    parts = value.split("*")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"image_size must look like WIDTH*HEIGHT, got {value!r}")
    width, height = (int(p) for p in parts)
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive, got {value!r}")
    return width, height


def default_shift(image_size: str) -> float:
    """The official shift for a size: 3.0 at or below 832*480's area (the 480p sizes and any
    smaller EXTRA_IMAGE_SIZES), else SHIFT_DEFAULT (5.0, the 720p sizes and anything larger)."""
    width, height = parse_image_size(image_size)
    return SHIFT_DEFAULT_480P if width * height <= SHIFT_480P_MAX_AREA else SHIFT_DEFAULT


def is_valid_num_frames(n: int) -> bool:
    # The Wan VAE compresses time by 4 and keeps the first frame: 4k+1 frames.
    return n % 4 == 1


def nearest_valid_num_frames(n: int) -> tuple[int, int]:
    """The valid frame counts (4k+1) just below and just above ``n``."""
    below = n - ((n - 1) % 4)
    above = below + 4 if below != n else n
    return below, above


def valid_num_frames_in_range(n: int) -> list[int]:
    """The valid frame counts nearest ``n`` that also lie inside the API range."""
    below, above = nearest_valid_num_frames(n)
    return [v for v in dict.fromkeys((below, above)) if NUM_FRAMES_MIN <= v <= NUM_FRAMES_MAX]


# Wan2.1 I2V's default negative prompt (wan/configs/shared_config.py sample_neg_prompt, with the
# "镜头晃动，" prefix that wan/configs/wan_i2v_14B.py adds for I2V), used when a request leaves
# negative_prompt empty. The model was tuned with this Chinese text, so it is kept verbatim.
# Gloss: "camera shake, garish colours, overexposed, static, blurry details, subtitles,
# style, artwork, painting, picture, still, overall greyish, worst quality, low quality, JPEG
# compression artefacts, ugly, mutilated, extra fingers, badly drawn hands, badly drawn faces,
# deformed, disfigured, malformed limbs, fused fingers, motionless picture, cluttered
# background, three legs, many people in the background, walking backwards".
DEFAULT_NEGATIVE_PROMPT: str = (
    "镜头晃动，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


# Per-request LoRA adapters: files in the daemons' LORA_DIR, each named by its file stem. A job
# takes at most LORAS_MAX of them, each with a scale in [LORA_SCALE_MIN, LORA_SCALE_MAX]
# (0 leaves the model as it is; negative scales subtract an adapter's effect).
LORAS_MAX = 4
LORA_SCALE_MIN, LORA_SCALE_MAX, LORA_SCALE_DEFAULT = -2.0, 2.0, 1.0
LORA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def parse_lora_list(text: str) -> list[dict[str, object]]:
    """"distill:1.0,style:0.6" (scale 1.0 when left out) -> [{"name", "scale"}, ...];
    ValueError naming the first bad entry (name, scale, range, count, repeat)."""
    loras: list[dict[str, object]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, scale_text = item.partition(":")
        name = name.strip()
        if not re.match(LORA_NAME_PATTERN, name):
            raise ValueError(f"bad LoRA name {name!r} (letters, digits, '.', '_', '-')")
        try:
            scale = float(scale_text) if scale_text.strip() else LORA_SCALE_DEFAULT
        except ValueError:
            raise ValueError(f"bad scale {scale_text!r} for LoRA {name}") from None
        if not math.isfinite(scale) or not LORA_SCALE_MIN <= scale <= LORA_SCALE_MAX:
            raise ValueError(f"the scale of LoRA {name} must be in [{LORA_SCALE_MIN}, {LORA_SCALE_MAX}], got {scale_text}")
        if any(entry["name"] == name for entry in loras):
            raise ValueError(f"LoRA {name} is named twice")
        loras.append({"name": name, "scale": scale})
    if len(loras) > LORAS_MAX:
        raise ValueError(f"at most {LORAS_MAX} LoRAs, got {len(loras)}")
    return loras
