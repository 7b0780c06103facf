"""What an upload costs the web worker before and after its decoding moved out of the request.

A 5 KB 1-bit PNG whose header says 6320 x 6320 (40 megapixels, under IMAGE_MAX_PIXELS): the
request now reads its header only (videojobs.net.images.probe_image); the full decode
(normalize_image) runs in prepare_input, in the django-q2 worker. Prints the seconds and the
peak memory growth of each, in this process (the probe first: ru_maxrss only grows).

Usage: .venv/bin/python bench/upload_header.py
"""
from __future__ import annotations

import resource
import struct
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from videojobs.net.images import normalize_image, probe_image  # noqa: E402

SIDE = 6320


def blank_png(side: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    rows = (b"\0" * (1 + (side + 7) // 8)) * side
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def measured(label: str, work) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"{label:<42} {seconds * 1000:9.2f} ms   peak memory +{grown:6.1f} MB")


def main() -> None:
    data = blank_png(SIDE)
    probe_image(blank_png(8))  # Pillow loads its format plugins once per process: not counted
    print(f"a {len(data)}-byte PNG of {SIDE}x{SIDE}")
    measured("request: header check (probe_image)", lambda: probe_image(data, max_pixels=40_000_000))
    measured("prepare_input: full decode (normalize_image)", lambda: normalize_image(data, max_pixels=40_000_000))


if __name__ == "__main__":
    main()
