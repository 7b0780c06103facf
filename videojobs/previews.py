"""A finished video's previews for GET /v1/videos/{id}/content: a thumbnail (one frame, WebP)
and a sprite sheet (a grid of evenly spaced frames, JPEG).

Made from the mp4 in the web process with imageio's ffmpeg reader and Pillow (no torch), the
first time they are asked for, and cached next to the video (``<requestId>.thumbnail.webp``,
``<requestId>.spritesheet.jpg``); whatever deletes a video deletes them too (remove_previews).
"""
from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
from PIL import Image


@dataclass(frozen=True)
class Variant:
    suffix: str
    content_type: str
    pillow_format: str


VARIANTS: dict[str, Variant] = {
    "thumbnail": Variant("thumbnail.webp", "image/webp", "WEBP"),
    "spritesheet": Variant("spritesheet.jpg", "image/jpeg", "JPEG"),
}
# The sprite sheet: at most SPRITE_COLUMNS x SPRITE_ROWS frames, each at most SPRITE_TILE_WIDTH wide.
SPRITE_COLUMNS, SPRITE_ROWS, SPRITE_TILE_WIDTH = 4, 4, 256


def preview_path(video: Path, variant: str) -> Path:
    """Where ``variant`` of ``video`` is cached: beside it, named after it."""
    return video.with_name(f"{video.stem}.{VARIANTS[variant].suffix}")


def remove_previews(video: Path) -> None:
    """Delete the cached previews of ``video`` (with the video, or after it)."""
    for variant in VARIANTS:
        preview_path(video, variant).unlink(missing_ok=True)


def make_preview(video: Path, variant: str) -> Path:
    """The cached preview of ``video``, made now if it is missing or older than the video.
    Raises FileNotFoundError when the video is gone, ValueError for an unknown variant or a
    video that cannot be decoded or has no frames."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    target = preview_path(video, variant)
    video_mtime = video.stat().st_mtime  # FileNotFoundError when the video is gone
    if target.is_file() and target.stat().st_mtime >= video_mtime:
        return target
    # 1. Decode every frame once, keeping a small tile of each and the middle frame whole.
    frames = _read_frames(video)
    # 2. Compose the picture and write it atomically (a reader never sees half a file).
    picture = frames.middle if variant == "thumbnail" else _sprite_sheet(frames.tiles)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    picture.save(tmp, format=VARIANTS[variant].pillow_format, quality=85)
    tmp.replace(target)
    return target


@dataclass
class _Frames:
    middle: Image.Image
    tiles: list[Image.Image]


def _read_frames(video: Path) -> _Frames:
    try:
        return _decode(video)
    except (OSError, RuntimeError, IndexError) as exc:  # imageio's ffmpeg reader on a file it cannot read
        raise ValueError(f"{video.name} could not be decoded ({type(exc).__name__})") from exc


def _decode(video: Path) -> _Frames:
    reader = imageio.get_reader(video, format="FFMPEG")
    try:
        total = reader.count_frames()
        tiles: list[Image.Image] = []
        middle: Image.Image | None = None
        for index, frame in enumerate(reader):  # frame: (H, W, 3) uint8
            image = Image.fromarray(frame)
            if index == total // 2:
                middle = image.copy()
            height = max(1, round(image.height * SPRITE_TILE_WIDTH / image.width))
            tiles.append(image.resize((SPRITE_TILE_WIDTH, height)) if image.width > SPRITE_TILE_WIDTH else image)
    finally:
        reader.close()
    if not tiles:
        raise ValueError(f"{video.name} has no frames")
    return _Frames(middle=middle or tiles[-1], tiles=tiles)


def _sprite_sheet(tiles: list[Image.Image]) -> Image.Image:
    """Up to SPRITE_COLUMNS x SPRITE_ROWS evenly spaced frames, row by row, in time order."""
    count = min(len(tiles), SPRITE_COLUMNS * SPRITE_ROWS)
    picked = [tiles[round(i * (len(tiles) - 1) / max(count - 1, 1))] for i in range(count)]
    columns = min(count, SPRITE_COLUMNS)
    rows = math.ceil(count / columns)
    width, height = picked[0].size
    sheet = Image.new("RGB", (columns * width, rows * height))
    for i, tile in enumerate(picked):
        sheet.paste(tile, ((i % columns) * width, (i // columns) * height))
    return sheet
