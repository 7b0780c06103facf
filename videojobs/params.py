"""Generation parameter vocabulary shared by the API (no torch) and the daemon.

Pure Python on purpose: the web process validates requests with these values and must
never import torch.
"""
from __future__ import annotations

import math
import re

SAMPLE_SOLVERS: tuple[str, ...] = ("unipc", "dpm++", "euler", "distill")
# The step-distilled sampler (LightX2V's step- and CFG-distilled Wan2.1): a few Euler steps on
# a fixed denoising step list, one DiT pass each, no classifier-free guidance. It needs a
# distilled model (the full distilled checkpoint, or the 4-step distill LoRA on the base).
DISTILL_SOLVER = "distill"

# The sizes Wan2.1-I2V-14B-720P was trained for ("WIDTH*HEIGHT", as in the original API).
SUPPORTED_IMAGE_SIZES: tuple[str, ...] = ("1280*720", "720*1280", "832*480", "480*832")

# Original contract ranges.
PROMPT_MIN_CHARS, PROMPT_MAX_CHARS = 10, 500
NEGATIVE_PROMPT_MAX_CHARS = 500
NUM_FRAMES_MIN, NUM_FRAMES_MAX, NUM_FRAMES_DEFAULT = 24, 120, 81
GUIDANCE_MIN, GUIDANCE_MAX, GUIDANCE_DEFAULT = 1.0, 20.0, 3.0
STEPS_MIN, STEPS_MAX, STEPS_DEFAULT = 20, 100, 30
DISTILL_STEPS_MIN, DISTILL_STEPS_MAX, DISTILL_STEPS_DEFAULT = 1, 8, 4
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
# How the image becomes the first frame. "crop" (the original contract): exactly image_size,
# the image scaled to cover it and centre-cropped. "auto" (Wan2.1's own way): the whole image,
# at the size its aspect ratio gives at image_size's area (output_size).
ASPECT_MODES: tuple[str, ...] = ("crop", "auto")
ASPECT_DEFAULT = "crop"
# The Wan VAE downsamples by 8 in space and the DiT patches 2 x 2 latents: sizes are whole
# patches, multiples of 16 pixels.
VAE_SPATIAL_STRIDE = 8
DIT_PATCH = 2


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


def aspect_size(*, image_width: int, image_height: int, max_area: int) -> tuple[int, int]:
    """(width, height) that keeps an image's aspect ratio at about max_area pixels, rounded as
    Wan2.1 rounds it (wan/image2video.py, WanI2V.generate at 9737cba):
    lat_h = round(sqrt(max_area * h / w) // 8 // 2 * 2), lat_w likewise with w / h, size = lat * 8.
    The floor divisions act on floats, as numpy's do there. An image so thin that a side rounds
    to no whole patch raises ValueError (the official code would fail on it later)."""
    if image_width <= 0 or image_height <= 0 or max_area <= 0:
        raise ValueError(f"image size and max_area must be positive, got {image_width}x{image_height}, {max_area}")
    aspect_ratio = image_height / image_width
    lat_h = round(math.sqrt(max_area * aspect_ratio) // VAE_SPATIAL_STRIDE // DIT_PATCH * DIT_PATCH)
    lat_w = round(math.sqrt(max_area / aspect_ratio) // VAE_SPATIAL_STRIDE // DIT_PATCH * DIT_PATCH)
    if lat_h < DIT_PATCH or lat_w < DIT_PATCH:
        raise ValueError(
            f"an image of {image_width}x{image_height} pixels is too narrow to keep whole at {max_area} pixels: "
            f"a side would be under {VAE_SPATIAL_STRIDE * DIT_PATCH} pixels; use aspect \"crop\""
        )
    return lat_w * VAE_SPATIAL_STRIDE, lat_h * VAE_SPATIAL_STRIDE


def output_size(*, image_size: str, aspect: str, image_width: int, image_height: int) -> tuple[int, int]:
    """(width, height) of the video a request makes from an image of that size: image_size
    itself under "crop", the image's own aspect ratio at image_size's area under "auto"."""
    width, height = parse_image_size(image_size)
    if aspect == "crop":
        return width, height
    if aspect == "auto":
        return aspect_size(image_width=image_width, image_height=image_height, max_area=width * height)
    raise ValueError(f"aspect must be one of {', '.join(ASPECT_MODES)}, got {aspect!r}")


def format_size(width: int, height: int) -> str:
    """(1280, 720) -> "1280*720", the API's spelling of a size."""
    return f"{width}*{height}"


def steps_range(solver: str) -> tuple[int, int, int]:
    """(min, max, default) infer_steps for a sampler: 1-8 (4) for distill, else the original 20-100 (30)."""
    if solver == DISTILL_SOLVER:
        return DISTILL_STEPS_MIN, DISTILL_STEPS_MAX, DISTILL_STEPS_DEFAULT
    return STEPS_MIN, STEPS_MAX, STEPS_DEFAULT


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


def lora_text_items(text: str) -> list[tuple[str, str]]:
    """The one reading of the "name:scale,name:scale" text (DEFAULT_LORAS, a form field, the CLI):
    (name, scale text) per entry, both stripped; the scale text is "" where it was left out."""
    items = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, scale_text = item.partition(":")
        items.append((name.strip(), scale_text.strip()))
    return items


def parse_lora_list(text: str) -> list[dict[str, object]]:
    """"distill:1.0,style:0.6" (scale 1.0 when left out) -> [{"name", "scale"}, ...];
    ValueError naming the first bad entry (name, scale, range, count, repeat)."""
    loras: list[dict[str, object]] = []
    for name, scale_text in lora_text_items(text):
        if not re.match(LORA_NAME_PATTERN, name):
            raise ValueError(f"bad LoRA name {name!r} (letters, digits, '.', '_', '-')")
        try:
            scale = float(scale_text) if scale_text else LORA_SCALE_DEFAULT
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
