"""inference.video: H.264 MP4 writing, atomic publication and reading back."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest

from inference import video
from inference.video import VideoInfo, probe_mp4, write_mp4


def _frames(count: int = 9, height: int = 64, width: int = 96) -> np.ndarray:
    # A moving gradient, so the encoder has real content to compress.
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for index in range(count):
        frames[index, ..., 0] = (x * 255 // max(width - 1, 1) + index * 16) % 256
        frames[index, ..., 1] = y * 255 // max(height - 1, 1)
        frames[index, ..., 2] = 128
    return frames


def _top_level_boxes(path: Path) -> list[str]:
    """The ISO-BMFF top-level box types in file order (ftyp, moov, mdat, ...)."""
    data = path.read_bytes()
    boxes: list[str] = []
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def _stream_description(path: Path) -> str:
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False
    )
    return next(line for line in probe.stderr.splitlines() if "Video:" in line)


def test_mp4_has_requested_frames_fps_and_resolution(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    info = write_mp4(_frames(9, 64, 96), path, fps=16)
    assert info == VideoInfo(
        path=path, size_bytes=path.stat().st_size, frames=9, fps=16, width=96, height=64, duration_seconds=9 / 16
    )
    probed = probe_mp4(path)
    assert (probed.frames, probed.fps, probed.width, probed.height) == (9, 16, 96, 64)
    assert probed.duration_seconds == pytest.approx(9 / 16)


def test_size_that_is_not_a_multiple_of_16_is_kept_exactly(tmp_path: Path) -> None:
    info = probe_mp4(write_mp4(_frames(5, 40, 72), tmp_path / "odd.mp4", fps=8).path)
    assert (info.width, info.height, info.frames, info.fps) == (72, 40, 5, 8)


def test_mp4_is_h264_yuv420p_with_the_index_first(tmp_path: Path) -> None:
    path = write_mp4(_frames(), tmp_path / "web.mp4").path
    description = _stream_description(path)
    assert "h264" in description
    assert "yuv420p" in description
    boxes = _top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_frames_survive_encoding_closely(tmp_path: Path) -> None:
    frames = _frames()
    path = write_mp4(frames, tmp_path / "q.mp4").path
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        # Not list(reader): the ffmpeg reader reports len() as infinity.
        decoded = np.stack([frame for frame in reader.iter_data()])
    finally:
        reader.close()
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6


class _FailingWriter:
    """Wraps a real writer and fails on the third frame, as a full disk would."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.appended = 0

    def append_data(self, frame: np.ndarray) -> None:
        if self.appended == 2:
            raise OSError("No space left on device")
        self.real.append_data(frame)
        self.appended += 1

    def close(self) -> None:
        self.real.close()


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_get_writer = video.imageio.get_writer
    monkeypatch.setattr(video.imageio, "get_writer", lambda *a, **k: _FailingWriter(real_get_writer(*a, **k)))
    with pytest.raises(OSError, match="No space left on device"):
        write_mp4(_frames(), tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous video")
    real_get_writer = video.imageio.get_writer
    monkeypatch.setattr(video.imageio, "get_writer", lambda *a, **k: _FailingWriter(real_get_writer(*a, **k)))
    with pytest.raises(OSError):
        write_mp4(_frames(), path)
    assert path.read_bytes() == b"previous video"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_successful_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")
    write_mp4(_frames(5), path)
    assert probe_mp4(path).frames == 5
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((9, 64, 96), dtype=np.uint8), r"frames must have shape \(F, H, W, 3\), got \(9, 64, 96\)"),
        (np.zeros((9, 64, 96, 3), dtype=np.float32), r"frames must be uint8, got float32"),
        (np.zeros((0, 64, 96, 3), dtype=np.uint8), r"frames is empty"),
        (np.zeros((9, 63, 96, 3), dtype=np.uint8), r"frame width and height must be even for yuv420p, got 96x63"),
    ],
)
def test_invalid_frames_are_rejected_without_creating_files(tmp_path: Path, frames: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_mp4(frames, tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_probe_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no video at"):
        probe_mp4(tmp_path / "missing.mp4")
