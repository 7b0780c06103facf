"""What the videojobs.net tests share: images, a fetch policy, HTTP servers on loopback and
their fixtures, a fake resolver.

These need no Django settings and no database. The servers run on 127.0.0.2 (allowed by the
test policy) and, to prove a request never happens, on 127.0.0.1 (not allowed). All traffic
stays on the loopback interface.
"""
from __future__ import annotations

import io
import ipaddress
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from videojobs.errors import ImageInputError
from videojobs.net.safe_http import FetchPolicy

ORIGIN_IP = "127.0.0.2"
ALLOWED = (ipaddress.ip_network("127.0.0.2/32"),)
SMALL_MAX_BYTES = 100_000


def make_png(size=(32, 24), color=(10, 200, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_jpeg(size=(40, 30), color=(200, 20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def blank_1bit_png(width: int, height: int) -> bytes:
    """A black 1-bit greyscale PNG built by hand: a few KB whatever size its header declares
    (6320x6320 is about 5 KB), without Pillow ever holding its pixels. Decoding it costs what
    its size says (6320x6320: about 1 s and 200 MB)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + the packed bits of one row
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height, 9))
            + chunk(b"IEND", b""))


GOOD_PNG = make_png()
GOOD_JPEG = make_jpeg()


def policy(**overrides) -> FetchPolicy:
    values = dict(
        max_bytes=SMALL_MAX_BYTES,
        connect_timeout=1.0,
        total_timeout=1.0,
        max_redirects=3,
        allowed_networks=ALLOWED,
    )
    values.update(overrides)
    return FetchPolicy(**values)


# --------------------------------------------------------------------------------------
# local test servers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self):  # noqa: N802
        server = self.server
        with server.lock:
            server.requests.append((self.path, dict(self.headers.items())))
        path = self.path.split("?", 1)[0]
        route = server.routes.get(path)
        if route is None and path.startswith("/loop/"):
            route = server.routes["/loop/"]
        if route is None:
            self._send(404, b"not found", "text/plain")
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass

    def _send(self, status, body, content_type="application/octet-stream", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location, status=302):
        self._send(status, b"", "text/plain", extra=[("Location", location)])


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, routes):
        super().__init__(address, _Handler)
        self.routes = routes
        self.requests = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    @property
    def port(self):
        return self.server_address[1]

    def url(self, path, host=ORIGIN_IP, scheme="http"):
        return f"{scheme}://{host}:{self.port}{path}"

    def handle_error(self, request, client_address):  # client hung up: expected here
        pass


def serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return thread


def stop_server(server, thread):
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=2)


def routes(server_ref):
    def good_png(h):
        h._send(200, GOOD_PNG, "image/png")

    def good_jpeg(h):
        h._send(200, GOOD_JPEG, "image/jpeg")

    def text(h):
        h._send(200, b"<html>definitely not an image</html>", "text/html")

    def server_error(h):
        h._send(500, b"oops", "text/plain")

    def big_with_length(h):
        # Declares more than the cap, sends a little, then waits: the client must give
        # up on the header alone rather than wait for the body.
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(SMALL_MAX_BYTES * 100))
        h.end_headers()
        h.wfile.write(b"\x89PNG" + b"\0" * 100)
        h.wfile.flush()
        h.server.stop.wait(3)

    def big_close_delimited(h):
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        chunk = b"\0" * 8192
        for _ in range(SMALL_MAX_BYTES // 8192 + 10):
            h.wfile.write(chunk)

    def big_chunked(h):
        h.protocol_version = "HTTP/1.1"
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        chunk = b"\0" * 8192
        for _ in range(SMALL_MAX_BYTES // 8192 + 10):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        h.wfile.write(b"0\r\n\r\n")

    def exactly_max(h):
        h._send(200, b"\1" * SMALL_MAX_BYTES, "image/png")

    def sleepy(h):
        # Accepts the connection, then says nothing for 3 s.
        h.server.stop.wait(3)
        h._send(200, GOOD_PNG, "image/png")

    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        h.wfile.flush()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not h.server.stop.is_set():
            h.wfile.write(b"\0")
            h.wfile.flush()
            time.sleep(0.2)

    def trickle_headers(h):
        h.wfile.write(b"HTTP/1.0 200 OK\r\n")
        h.wfile.flush()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not h.server.stop.is_set():
            h.wfile.write(b"X-Slow: y\r\n")
            h.wfile.flush()
            time.sleep(0.2)

    def to_loopback(h):
        h.redirect(f"http://127.0.0.1:{server_ref['loopback_port']}/good.png")

    def to_relative_good(h):
        h.redirect("/good.png", status=301)

    def to_absolute_good(h):
        h.redirect(h.server.url("/good.jpg"), status=307)

    def to_ftp(h):
        h.redirect("ftp://example.com/x.png")

    def no_location(h):
        h._send(302, b"", "text/plain")

    def loop(h):
        n = int(h.path.split("/")[2])
        h.redirect(f"/loop/{n + 1}", status=308)

    def echo_host(h):
        h._send(200, h.headers.get("Host", "").encode(), "text/plain")

    return {
        "/good.png": good_png,
        "/good.jpg": good_jpeg,
        "/text": text,
        "/error": server_error,
        "/big-with-length": big_with_length,
        "/big-close-delimited": big_close_delimited,
        "/big-chunked": big_chunked,
        "/exactly-max": exactly_max,
        "/sleepy": sleepy,
        "/trickle": trickle,
        "/trickle-headers": trickle_headers,
        "/to-loopback": to_loopback,
        "/to-relative-good": to_relative_good,
        "/to-absolute-good": to_absolute_good,
        "/to-ftp": to_ftp,
        "/no-location": no_location,
        "/loop/": loop,
        "/echo-host": echo_host,
    }


@pytest.fixture
def loopback_server():
    """A server on 127.0.0.1, which the test policy does not allow."""
    server = LoopbackServer(("127.0.0.1", 0), routes({}))
    thread = serve(server)
    yield server
    stop_server(server, thread)


@pytest.fixture
def origin(loopback_server):
    """The image origin on 127.0.0.2 (allowed by the test policy)."""
    ref = {"loopback_port": loopback_server.port}
    server = LoopbackServer((ORIGIN_IP, 0), routes(ref))
    thread = serve(server)
    yield server
    stop_server(server, thread)


def fake_resolver(mapping, calls=None):
    """getaddrinfo stand-in: host -> list of IP strings."""

    def resolve(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for ip in mapping[host]:
            if ":" in ip:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return out

    return resolve


@pytest.fixture
def no_connect(monkeypatch):
    """Fail the test if videojobs.net opens any TCP connection."""
    import urllib3.util.connection as u3conn

    def forbidden(*args, **kwargs):
        raise AssertionError(f"unexpected connection attempt to {args[0]!r}")

    monkeypatch.setattr(u3conn, "create_connection", forbidden)


def expect_error(code, fn, *args, **kwargs) -> ImageInputError:
    with pytest.raises(ImageInputError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value.reason
    assert str(info.value) == info.value.reason
    assert "/work" not in info.value.reason and "Traceback" not in info.value.reason
    return info.value
