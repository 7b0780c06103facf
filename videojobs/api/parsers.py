"""The API's JSON parser: DRF's, plus the two ways a body can make it fail badly.

- Nesting: Python's JSON decoder recurses per level and raises RecursionError past ~1000
  levels (a 500 before this parser). No request of this API nests more than a few levels, so
  anything deeper than MAX_DEPTH is refused as invalid JSON before decoding.
- Size: a body sent with ``Transfer-Encoding: chunked`` has no Content-Length for the size
  middleware to check; its stream is read here at most one byte past the limit.
"""
from __future__ import annotations

import io

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32


class PayloadTooLarge(ParseError):
    status_code = 413
    default_code = "payload_too_large"


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class GuardedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes")
        if json_depth(raw) > MAX_DEPTH:
            raise ParseError(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        return super().parse(io.BytesIO(raw), media_type, parser_context)
