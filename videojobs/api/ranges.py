"""A file served with HTTP Range support (RFC 9110 section 14): one byte range gets a 206 with
Content-Range, an unsatisfiable one a 416, anything else (no Range, several ranges, a
malformed header) the whole file with 200. Clients seek in a video with it."""
from __future__ import annotations

import re
from pathlib import Path

from django.http import FileResponse, HttpResponse, StreamingHttpResponse

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
CHUNK_BYTES = 64 * 1024


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(first, last) inclusive for a satisfiable single range; None to send the whole file;
    False when the range cannot be satisfied."""
    match = _RANGE.fullmatch((header or "").strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        return (max(size - count, 0), size - 1) if count and size else False
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # invalid: ignored, as RFC 9110 says
    return (start, end) if start < size else False


def ranged_file_response(*, range_header: str | None, path: Path, content_type: str, filename: str) -> HttpResponse:
    """``path`` as a download, honouring one byte range."""
    size = path.stat().st_size
    span = byte_range(range_header, size)
    if span is False:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
    elif span is None:
        response = FileResponse(path.open("rb"), content_type=content_type, filename=filename)
    else:
        first, last = span
        response = StreamingHttpResponse(_read(path, first, last - first + 1), status=206, content_type=content_type)
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
        response["Content-Length"] = str(last - first + 1)
        response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["Accept-Ranges"] = "bytes"
    return response


def _read(path: Path, offset: int, count: int):
    with path.open("rb") as stream:
        stream.seek(offset)
        while count > 0:
            chunk = stream.read(min(CHUNK_BYTES, count))
            if not chunk:
                return
            count -= len(chunk)
            yield chunk
