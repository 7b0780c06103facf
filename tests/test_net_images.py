"""videojobs.net.images: decoding and normalising an input image (formats, alpha, EXIF, pixel
limits)."""
from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from tests.net_support import (  # noqa: F401 (fixtures are found by name)
    GOOD_JPEG,
    blank_1bit_png,
    expect_error,
    make_png,
)
from videojobs.net.images import ImageHeader, normalize_image, probe_image

# --------------------------------------------------------------------------------------
# normalize_image


def test_png_with_alpha_is_flattened_onto_white():
    img = Image.new("RGBA", (4, 2), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    img.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    result = normalize_image(buf.getvalue())
    out = Image.open(io.BytesIO(result.data))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (255, 0, 0)
    assert all(120 <= c <= 135 for c in out.getpixel((2, 0)))


def test_palette_gif_with_transparency_is_flattened_and_first_frame_used():
    frames = [Image.new("P", (6, 6), 0), Image.new("P", (6, 6), 1)]
    palette = [0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 6)
    for frame in frames:
        frame.putpalette(palette)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], transparency=1)
    result = normalize_image(buf.getvalue())
    assert result.source_format == "GIF"
    out = Image.open(io.BytesIO(result.data))
    assert out.getpixel((0, 0)) == (0, 0, 255)  # frame 0 is blue, not frame 1


def test_exif_orientation_is_applied():
    from PIL import Image as _Image

    img = _Image.new("RGB", (40, 20), (0, 0, 0))
    exif = _Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    result = normalize_image(buf.getvalue())
    assert (result.width, result.height) == (20, 40)


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "GIF"])
def test_other_common_formats_are_accepted(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (1, 2, 3)).save(buf, format=fmt)
    result = normalize_image(buf.getvalue())
    assert (result.width, result.height, result.source_format) == (8, 6, fmt)


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    img = Image.new("I;16", (2, 1))
    img.putpixel((0, 0), 0x8000)
    img.putpixel((1, 0), 0xFFFF)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = Image.open(io.BytesIO(normalize_image(buf.getvalue()).data))
    assert out.getpixel((0, 0)) == (128, 128, 128)
    assert out.getpixel((1, 0)) == (255, 255, 255)


def test_formats_outside_the_allow_list_are_not_images():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PPM")
    expect_error("IMAGE_NOT_AN_IMAGE", normalize_image, buf.getvalue())


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\0" * 10])
def test_non_image_bytes_are_not_an_image(data):
    expect_error("IMAGE_NOT_AN_IMAGE", normalize_image, data)


def test_truncated_image_is_not_an_image():
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="PNG")
    expect_error("IMAGE_NOT_AN_IMAGE", normalize_image, buf.getvalue()[: len(buf.getvalue()) // 2])


def test_normalisation_is_deterministic_and_idempotent():
    a = normalize_image(GOOD_JPEG)
    b = normalize_image(GOOD_JPEG)
    assert a == b
    again = normalize_image(a.data)
    assert again.sha256 == a.sha256 and again.data == a.data


def test_image_over_max_pixels_is_refused_from_the_header(monkeypatch):
    # 7000x7000 1-bit PNG: ~6 MB of zero bits compress to a few KB.
    buf = io.BytesIO()
    Image.new("1", (7000, 7000), 0).save(buf, format="PNG")
    data = buf.getvalue()
    assert len(data) < 200_000

    from PIL import ImageFile

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixel data must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    err = expect_error("IMAGE_TOO_LARGE", normalize_image, data)
    assert err.reason == "image is 7000x7000 pixels; the limit is 40000000"
    err = expect_error("IMAGE_TOO_LARGE", normalize_image, make_png((100, 50)), max_pixels=4999)
    assert err.reason == "image is 100x50 pixels; the limit is 4999"


def _png_header_only(width, height) -> bytes:
    def chunk(kind, payload):
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_rejected_by_pillow_is_refused_with_pixel_reason():
    # 30000x30000 = 900 Mpx: Pillow itself raises DecompressionBombError on open.
    err = expect_error("IMAGE_TOO_LARGE", normalize_image, _png_header_only(30000, 30000))
    assert "the limit is 40000000" in err.reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_claiming_more_than_max_pixels_is_refused():
    err = expect_error(
        "IMAGE_TOO_LARGE", normalize_image, _png_header_only(12000, 12000), max_pixels=40_000_000
    )
    assert err.reason == "image is 12000x12000 pixels; the limit is 40000000"


# --------------------------------------------------------------------------------------
# probe_image: the header alone (an upload, in the request)


@pytest.fixture
def no_decoding(monkeypatch):
    def load(self, *args, **kwargs):
        raise AssertionError("pixel data must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_probe_reads_the_format_and_size_from_the_header_without_decoding(no_decoding):
    huge = blank_1bit_png(6320, 6320)
    assert len(huge) < 10_000
    assert probe_image(huge, max_pixels=40_000_000) == ImageHeader(source_format="PNG", width=6320, height=6320)
    assert probe_image(GOOD_JPEG) == ImageHeader(source_format="JPEG", width=40, height=30)


def test_probe_refuses_too_many_pixels_from_the_header_without_decoding(no_decoding):
    err = expect_error("IMAGE_TOO_LARGE", probe_image, blank_1bit_png(6320, 6320), max_pixels=1_000_000)
    assert err.reason == "image is 6320x6320 pixels; the limit is 1000000"


@pytest.mark.parametrize("data", [b"", b"hello world", b"%PDF-1.4 not a picture"])
def test_probe_refuses_what_is_not_an_accepted_format(no_decoding, data):
    expect_error("IMAGE_NOT_AN_IMAGE", probe_image, data)


def test_probe_refuses_formats_outside_the_allow_list(no_decoding):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="TIFF")
    expect_error("IMAGE_NOT_AN_IMAGE", probe_image, buf.getvalue())


def test_a_file_corrupt_past_its_header_passes_the_probe_and_fails_the_decode():
    truncated = make_png((40, 30))[:60]
    assert probe_image(truncated) == ImageHeader(source_format="PNG", width=40, height=30)
    expect_error("IMAGE_NOT_AN_IMAGE", normalize_image, truncated)
