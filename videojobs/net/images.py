"""Decode and check a job's input image, and re-encode it.

Pure Python: nothing from Django, no torch. :func:`probe_image` reads only the header (the
format against the allowlist, the size against a pixel limit) and decodes no pixel: an upload
is checked with it in the request. :func:`normalize_image` decodes the bytes (from
:func:`videojobs.net.safe_http.fetch_image_bytes`, or a stored upload, in the input task) with
Pillow under the same limits, applies the EXIF orientation, flattens to RGB on white and
re-encodes as PNG. Every failure a user can cause is raised as
:class:`videojobs.errors.ImageInputError`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from videojobs.errors import ErrorCode, ImageInputError

__all__ = [
    "ACCEPTED_FORMATS",
    "ImageHeader",
    "NormalizedImage",
    "normalize_image",
    "probe_image",
]

# Formats handed to Pillow.  Restricting them keeps decoders with a history of trouble
# (and EPS, which runs Ghostscript) away from untrusted bytes.  Multi-picture JPEGs from
# cameras are opened by the JPEG plugin and report their format as "MPO".
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


@dataclass(frozen=True)
class ImageHeader:
    source_format: str
    width: int
    height: int


@dataclass(frozen=True)
class NormalizedImage:
    data: bytes  # PNG bytes
    sha256: str
    width: int
    height: int
    source_format: str


def _not_an_image() -> ImageInputError:
    return ImageInputError("image_url is not an image", ErrorCode.IMAGE_NOT_AN_IMAGE)


def _too_many_pixels(width: int | None, height: int | None, max_pixels: int) -> ImageInputError:
    if width and height:
        return ImageInputError(
            f"image is {width}x{height} pixels; the limit is {max_pixels}", ErrorCode.IMAGE_TOO_LARGE
        )
    return ImageInputError(
        f"image has too many pixels; the limit is {max_pixels}", ErrorCode.IMAGE_TOO_LARGE
    )


def _flatten_to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit greyscale: scale to 8 bits (a plain convert would clip at 255).
        img = img.convert("I").point(lambda v: v / 256).convert("L")
    has_alpha = "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Pillow's lazy image (only the header read), restricted to ACCEPTED_FORMATS."""
    if not data:
        raise _not_an_image()
    try:
        return Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, None, max_pixels) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise _not_an_image() from None


def _checked_header(img: Image.Image, max_pixels: int) -> ImageHeader:
    """The format and size Pillow read from the header, within ``max_pixels``."""
    width, height = img.size
    if width <= 0 or height <= 0:
        raise _not_an_image()
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    return ImageHeader(source_format=(img.format or "").upper() or "UNKNOWN", width=width, height=height)


def probe_image(data: bytes, *, max_pixels: int = 40_000_000) -> ImageHeader:
    """Check ``data`` from its header alone: one of :data:`ACCEPTED_FORMATS`, at most
    ``max_pixels`` pixels. No pixel data is decoded, so the cost does not grow with the
    picture's size (a file that is corrupt past its header passes; :func:`normalize_image`
    finds it). Raises :class:`ImageInputError`."""
    with _open(data, max_pixels) as img:
        return _checked_header(img, max_pixels)


def _decode_rgb(img: Image.Image, width: int, height: int, max_pixels: int) -> Image.Image:
    """The first frame, EXIF-oriented and flattened to RGB."""
    try:
        img.seek(0)
        img.load()
        try:
            oriented = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - a broken EXIF block is not fatal
            oriented = img
        return _flatten_to_rgb(oriented if oriented is not None else img)
    except Image.DecompressionBombError:
        raise _too_many_pixels(width, height, max_pixels) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError):
        raise ImageInputError(
            "image_url is not an image (the file is corrupt or truncated)",
            ErrorCode.IMAGE_NOT_AN_IMAGE,
        ) from None


def normalize_image(data: bytes, *, max_pixels: int = 40_000_000) -> NormalizedImage:
    """Decode ``data`` and return it as an RGB PNG with its sha256.

    The size is read from the header and checked against ``max_pixels`` before any
    pixel data is decoded.  Only :data:`ACCEPTED_FORMATS` are decoded; animated images
    give their first frame.  Raises :class:`ImageInputError`.
    """
    img = _open(data, max_pixels)
    with img:
        header = _checked_header(img, max_pixels)
        rgb = _decode_rgb(img, header.width, header.height, max_pixels)
    if rgb.width * rgb.height > max_pixels:
        raise _too_many_pixels(rgb.width, rgb.height, max_pixels)
    rgb.info.clear()  # no metadata: identical pixels give identical bytes
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    png = out.getvalue()
    return NormalizedImage(
        data=png,
        sha256=hashlib.sha256(png).hexdigest(),
        width=rgb.width,
        height=rgb.height,
        source_format=header.source_format,
    )
