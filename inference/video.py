"""Writing generated frames to an MP4 that browsers play (H.264, yuv420p, faststart).

imageio's ffmpeg plugin drives the ffmpeg binary that imageio-ffmpeg ships, so no system
ffmpeg is needed. The file appears at its final path only once complete.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from videojobs.errors import ErrorCode


@dataclass
class VideoInfo:
    path: Path
    size_bytes: int
    frames: int
    fps: int
    width: int
    height: int
    duration_seconds: float


def _check_frames(frames: np.ndarray, fps: int) -> None:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (F, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    count, height, width, _ = frames.shape
    if count < 1:
        raise ValueError("frames is empty; a video needs at least one frame")
    # yuv420p stores colour at half resolution, so H.264 refuses odd sizes.
    if height % 2 or width % 2:
        raise ValueError(f"frame width and height must be even for yuv420p, got {width}x{height}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")


def write_mp4(frames: np.ndarray, path: Path, *, fps: int = 16) -> VideoInfo:
    """Encode frames (F, H, W, 3) uint8 to an H.264 MP4 at path, replacing it atomically."""
    # 1. Validate before creating anything.
    _check_frames(frames, fps)
    path = Path(path)
    count, height, width, _ = frames.shape

    # 2. Encode into a temporary file in the same folder, so the final rename is atomic.
    # The ".mp4" suffix tells ffmpeg the container.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part.mp4", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        writer = imageio.get_writer(
            tmp_path,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            # 1 keeps the exact size; imageio would otherwise pad it up to a multiple of 16.
            macro_block_size=1,
            # Constant quality instead of imageio's 0-10 scale; 18 is visually near-lossless.
            quality=None,
            # Moves the index to the front so browsers can start playing before the download ends.
            output_params=["-crf", "18", "-preset", "medium", "-movflags", "+faststart"],
            ffmpeg_log_level="error",
        )
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()

        # 3. Publish, readable by the web server (mkstemp creates files 0600).
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise

    return VideoInfo(
        path=path,
        size_bytes=path.stat().st_size,
        frames=count,
        fps=fps,
        width=width,
        height=height,
        duration_seconds=count / fps,
    )


def probe_mp4(path: Path) -> VideoInfo:
    """Read an MP4 back, counting frames by decoding them (container metadata can be off)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        meta = reader.get_meta_data()
        count = 0
        height = width = 0
        for frame in reader:
            height, width = frame.shape[:2]
            count += 1
    finally:
        reader.close()
    fps = int(round(float(meta["fps"])))
    return VideoInfo(
        path=path,
        size_bytes=path.stat().st_size,
        frames=count,
        fps=fps,
        width=int(width),
        height=int(height),
        duration_seconds=count / fps if fps else 0.0,
    )


def read_frames(path: Path) -> np.ndarray:
    """Decode an MP4 to (F, H, W, 3) uint8 frames (tests and benchmarks compare videos so)."""
    reader = imageio.get_reader(Path(path), format="FFMPEG")
    try:
        return np.stack([np.asarray(frame, dtype=np.uint8) for frame in reader])
    finally:
        reader.close()


def output_problem(folder: Path, *, min_free_bytes: int) -> tuple[ErrorCode, str] | None:
    """(error code, reason) when videos cannot be written to folder, else None.

    Checked before a job runs, so a full or read-only disk fails the job in a second instead of
    after its whole inference. The reason never names the server's paths."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        return (ErrorCode.OUTPUT_UNWRITABLE,
                f"the server cannot write videos ({type(exc).__name__} on its output folder); an operator must fix OUTPUT_DIR")
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        return (ErrorCode.DISK_FULL,
                f"the server's video disk has {free // 2**20} MiB free, under the {min_free_bytes // 2**20} MiB "
                "a video needs (MIN_FREE_DISK_MB); an operator must free space")
    return None
