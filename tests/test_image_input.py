"""Tests for videojobs.image_input (fetching and normalising a job's input image).

These tests need no Django settings and no database.  They run real HTTP(S) servers on
127.0.0.2 (allowed by the test policy) and, to prove a request never happens, on
127.0.0.1 (not allowed).  All traffic stays on the loopback interface.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from videojobs import image_input
from videojobs.image_input import (
    FetchPolicy,
    ImageInputError,
    NormalizedImage,
    fetch_image_bytes,
    is_forbidden_address,
    normalize_image,
    parse_networks,
)

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


class _Server(ThreadingHTTPServer):
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


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return thread


def _stop(server, thread):
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=2)


def _routes(server_ref):
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
    server = _Server(("127.0.0.1", 0), _routes({}))
    thread = _serve(server)
    yield server
    _stop(server, thread)


@pytest.fixture
def origin(loopback_server):
    """The image origin on 127.0.0.2 (allowed by the test policy)."""
    ref = {"loopback_port": loopback_server.port}
    server = _Server((ORIGIN_IP, 0), _routes(ref))
    thread = _serve(server)
    yield server
    _stop(server, thread)


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
    """Fail the test if image_input opens any TCP connection."""
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


# --------------------------------------------------------------------------------------
# fetching: success


def test_good_png_is_fetched_and_normalised(origin):
    data = fetch_image_bytes(origin.url("/good.png"), policy=policy())
    assert data == GOOD_PNG
    image = normalize_image(data)
    assert isinstance(image, NormalizedImage)
    assert (image.width, image.height) == (32, 24)
    assert image.source_format == "PNG"
    assert image.sha256 == hashlib.sha256(image.data).hexdigest()
    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == (32, 24)
    assert decoded.getpixel((0, 0)) == (10, 200, 30)


def test_good_jpeg_is_fetched_and_normalised_to_png(origin):
    data = fetch_image_bytes(origin.url("/good.jpg"), policy=policy())
    assert data == GOOD_JPEG
    image = normalize_image(data)
    assert (image.width, image.height) == (40, 30)
    assert image.source_format == "JPEG"
    assert image.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert image.sha256 == hashlib.sha256(image.data).hexdigest()


def test_request_sends_user_agent_and_accepts_images(origin):
    fetch_image_bytes(origin.url("/good.png"), policy=policy(user_agent="ua-test/9"))
    _path, headers = origin.requests[-1]
    assert headers["User-Agent"] == "ua-test/9"
    assert headers["Accept"].startswith("image/")


def test_hostname_is_resolved_once_and_connection_goes_to_validated_ip_with_original_host(origin):
    calls = []
    resolver = fake_resolver({"images.example": [ORIGIN_IP]}, calls)
    url = f"http://images.example:{origin.port}/echo-host"
    body = fetch_image_bytes(url, policy=policy(), resolver=resolver)
    assert body == f"images.example:{origin.port}".encode()
    assert calls == ["images.example"]


def test_dns_rebinding_cannot_switch_address_after_validation(origin, loopback_server):
    # First answer is the allowed origin, any later answer would be 127.0.0.1: the
    # fetcher must resolve once and connect to the address it validated.
    answers = iter([[ORIGIN_IP], ["127.0.0.1"], ["127.0.0.1"]])
    calls = []

    def rebinding(host, port, *args):
        calls.append(host)
        return fake_resolver({host: next(answers)})(host, port)

    url = f"http://rebind.example:{origin.port}/good.png"
    assert fetch_image_bytes(url, policy=policy(), resolver=rebinding) == GOOD_PNG
    assert calls == ["rebind.example"]
    assert loopback_server.requests == []


def test_relative_redirect_to_allowed_path_is_followed(origin):
    assert fetch_image_bytes(origin.url("/to-relative-good"), policy=policy()) == GOOD_PNG


def test_absolute_redirect_to_allowed_origin_is_followed(origin):
    assert fetch_image_bytes(origin.url("/to-absolute-good"), policy=policy()) == GOOD_JPEG


def test_body_of_exactly_max_bytes_is_accepted(origin):
    data = fetch_image_bytes(origin.url("/exactly-max"), policy=policy())
    assert len(data) == SMALL_MAX_BYTES


# --------------------------------------------------------------------------------------
# fetching: refusals


def test_http_404_reason_names_the_status(origin):
    err = expect_error(
        "IMAGE_HTTP_ERROR", fetch_image_bytes, origin.url("/nope.png"), policy=policy()
    )
    assert err.reason == "image_url returned HTTP 404"


def test_http_500_reason_names_the_status(origin):
    err = expect_error(
        "IMAGE_HTTP_ERROR", fetch_image_bytes, origin.url("/error"), policy=policy()
    )
    assert err.reason == "image_url returned HTTP 500"


def test_non_image_body_is_not_an_image(origin):
    data = fetch_image_bytes(origin.url("/text"), policy=policy())
    err = expect_error("IMAGE_NOT_AN_IMAGE", normalize_image, data)
    assert err.reason == "image_url is not an image"


def test_declared_content_length_over_max_bytes_is_refused_at_once(origin):
    started = time.monotonic()
    err = expect_error(
        "IMAGE_TOO_LARGE",
        fetch_image_bytes,
        origin.url("/big-with-length"),
        policy=policy(total_timeout=2.0),
    )
    assert time.monotonic() - started < 1.0  # did not wait for the body
    assert err.reason.startswith("image larger than ")


@pytest.mark.parametrize("path", ["/big-close-delimited", "/big-chunked"])
def test_body_over_max_bytes_without_content_length_is_refused(origin, path):
    err = expect_error("IMAGE_TOO_LARGE", fetch_image_bytes, origin.url(path), policy=policy())
    assert err.reason == f"image larger than {SMALL_MAX_BYTES} bytes"


def test_too_large_reason_uses_megabytes_for_the_default_cap():
    assert image_input._too_large(FetchPolicy()).reason == "image larger than 20 MB"


def test_server_that_sleeps_past_total_timeout_times_out_on_time(origin):
    started = time.monotonic()
    err = expect_error(
        "IMAGE_TIMEOUT",
        fetch_image_bytes,
        origin.url("/sleepy"),
        policy=policy(total_timeout=1.0),
    )
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0
    assert err.reason == "image_url timed out after 1 s"


def test_server_trickling_body_bytes_is_cut_off_at_total_timeout(origin):
    started = time.monotonic()
    expect_error(
        "IMAGE_TIMEOUT", fetch_image_bytes, origin.url("/trickle"), policy=policy(total_timeout=1.0)
    )
    assert time.monotonic() - started < 2.0


def test_server_trickling_headers_is_cut_off_at_total_timeout(origin):
    started = time.monotonic()
    expect_error(
        "IMAGE_TIMEOUT",
        fetch_image_bytes,
        origin.url("/trickle-headers"),
        policy=policy(total_timeout=1.0),
    )
    assert time.monotonic() - started < 2.0


def test_redirect_to_loopback_is_refused_as_non_public(origin, loopback_server):
    err = expect_error(
        "IMAGE_URL_FORBIDDEN", fetch_image_bytes, origin.url("/to-loopback"), policy=policy()
    )
    assert err.reason == "image_url redirected to a non-public address"
    assert loopback_server.requests == []  # never connected


def test_redirect_to_ftp_is_refused(origin):
    err = expect_error(
        "IMAGE_URL_FORBIDDEN", fetch_image_bytes, origin.url("/to-ftp"), policy=policy()
    )
    assert "http or https" in err.reason


def test_redirect_without_location_is_an_http_error(origin):
    err = expect_error(
        "IMAGE_HTTP_ERROR", fetch_image_bytes, origin.url("/no-location"), policy=policy()
    )
    assert "302" in err.reason


def test_too_many_redirects_are_refused(origin):
    err = expect_error(
        "IMAGE_TOO_MANY_REDIRECTS",
        fetch_image_bytes,
        origin.url("/loop/0"),
        policy=policy(max_redirects=3),
    )
    assert "more than 3" in err.reason
    paths = [p for p, _ in origin.requests]
    assert paths == ["/loop/0", "/loop/1", "/loop/2", "/loop/3"]


def test_max_redirects_zero_refuses_the_first_redirect(origin):
    expect_error(
        "IMAGE_TOO_MANY_REDIRECTS",
        fetch_image_bytes,
        origin.url("/to-relative-good"),
        policy=policy(max_redirects=0),
    )


def test_direct_url_to_loopback_is_refused_without_connecting(loopback_server):
    url = loopback_server.url("/good.png", host="127.0.0.1")
    err = expect_error("IMAGE_URL_FORBIDDEN", fetch_image_bytes, url, policy=policy())
    assert err.reason == "image_url host resolves to a non-public address (127.0.0.1)"
    assert loopback_server.requests == []


def test_hostname_resolving_to_private_address_is_refused_without_connecting(no_connect):
    resolver = fake_resolver({"evil.example": ["10.0.0.1"]})
    err = expect_error(
        "IMAGE_URL_FORBIDDEN",
        fetch_image_bytes,
        "http://evil.example/cat.png",
        policy=policy(),
        resolver=resolver,
    )
    assert err.reason == "image_url host resolves to a non-public address (10.0.0.1)"


def test_hostname_with_any_non_public_address_is_refused(no_connect):
    resolver = fake_resolver({"mixed.example": ["93.184.216.34", "169.254.169.254"]})
    err = expect_error(
        "IMAGE_URL_FORBIDDEN",
        fetch_image_bytes,
        "https://mixed.example/cat.png",
        policy=policy(),
        resolver=resolver,
    )
    assert "169.254.169.254" in err.reason


def test_ipv4_mapped_ipv6_loopback_is_refused(no_connect):
    resolver = fake_resolver({"mapped.example": ["::ffff:127.0.0.1"]})
    expect_error(
        "IMAGE_URL_FORBIDDEN",
        fetch_image_bytes,
        "http://mapped.example/cat.png",
        policy=policy(),
        resolver=resolver,
    )


def test_unresolvable_host_is_unreachable(no_connect):
    err = expect_error(
        "IMAGE_UNREACHABLE",
        fetch_image_bytes,
        "http://nowhere.invalid/cat.png",
        policy=policy(),
        resolver=fake_resolver({}),
    )
    assert err.reason == "image_url host could not be resolved"


def test_resolver_that_hangs_is_cut_off_at_total_timeout(no_connect):
    release = threading.Event()

    def hanging(*args):
        release.wait(5)
        return fake_resolver({"slow.example": [ORIGIN_IP]})(*args)

    started = time.monotonic()
    try:
        expect_error(
            "IMAGE_TIMEOUT",
            fetch_image_bytes,
            "http://slow.example/cat.png",
            policy=policy(total_timeout=1.0),
            resolver=hanging,
        )
        assert time.monotonic() - started < 2.0
    finally:
        release.set()


def test_connection_refused_is_reported():
    with socket.socket() as s:
        s.bind((ORIGIN_IP, 0))
        port = s.getsockname()[1]
    err = expect_error(
        "IMAGE_UNREACHABLE",
        fetch_image_bytes,
        f"http://{ORIGIN_IP}:{port}/cat.png",
        policy=policy(),
    )
    assert err.reason == "image_url could not be reached: connection refused"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/cat.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "//example.com/cat.png",
        "example.com/cat.png",
    ],
)
def test_non_http_urls_are_refused(url, no_connect):
    err = expect_error("IMAGE_URL_INVALID", fetch_image_bytes, url, policy=policy())
    assert err.reason == "image_url must use http or https"


@pytest.mark.parametrize(
    "url, reason",
    [
        ("", "image_url is empty"),
        ("http:///cat.png", "image_url has no host"),
        ("http://user:pw@example.com/cat.png", "image_url must not contain a user name or password"),
        ("http://example.com:99999/cat.png", "image_url is not a valid URL"),
    ],
)
def test_malformed_urls_are_refused(url, reason, no_connect):
    err = expect_error("IMAGE_URL_INVALID", fetch_image_bytes, url, policy=policy())
    assert err.reason == reason


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "2001:db8::1",
        "2001::1",
    ],
)
def test_non_public_addresses_are_forbidden(address):
    assert is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address):
    assert not is_forbidden_address(ipaddress.ip_address(address))


def test_allowed_networks_admit_an_otherwise_forbidden_address(origin):
    with pytest.raises(ImageInputError):
        fetch_image_bytes(origin.url("/good.png"), policy=policy(allowed_networks=()))
    assert fetch_image_bytes(origin.url("/good.png"), policy=policy()) == GOOD_PNG


# --------------------------------------------------------------------------------------
# https: SNI and certificate verification against the original hostname


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=images.test",
            "-addext", "subjectAltName=DNS:images.test",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def tls_origin(tls_files, loopback_server):
    cert, key = tls_files
    server = _Server((ORIGIN_IP, 0), _routes({"loopback_port": loopback_server.port}))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen_sni = []
    context.sni_callback = lambda sslsock, name, ctx: seen_sni.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.seen_sni = seen_sni
    thread = _serve(server)
    yield server
    _stop(server, thread)


def test_https_uses_original_hostname_for_sni_cert_and_host_header(tls_origin, tls_files):
    resolver = fake_resolver({"images.test": [ORIGIN_IP]})
    url = f"https://images.test:{tls_origin.port}/echo-host"
    body = fetch_image_bytes(url, policy=policy(ca_certs=tls_files[0]), resolver=resolver)
    assert body == f"images.test:{tls_origin.port}".encode()
    assert tls_origin.seen_sni == ["images.test"]


def test_https_with_untrusted_certificate_is_refused(tls_origin):
    resolver = fake_resolver({"images.test": [ORIGIN_IP]})
    err = expect_error(
        "IMAGE_UNREACHABLE",
        fetch_image_bytes,
        f"https://images.test:{tls_origin.port}/good.png",
        policy=policy(),
        resolver=resolver,
    )
    assert err.reason == "image_url could not be reached: TLS certificate verification failed"


def test_https_certificate_for_another_hostname_is_refused(tls_origin, tls_files):
    resolver = fake_resolver({"other.test": [ORIGIN_IP]})
    err = expect_error(
        "IMAGE_UNREACHABLE",
        fetch_image_bytes,
        f"https://other.test:{tls_origin.port}/good.png",
        policy=policy(ca_certs=tls_files[0]),
        resolver=resolver,
    )
    assert "certificate" in err.reason


# --------------------------------------------------------------------------------------
# parse_networks


def test_parse_networks_parses_comma_separated_cidrs():
    assert parse_networks("") == ()
    assert parse_networks("  ") == ()
    assert parse_networks("10.1.0.0/16, 192.0.2.7 ,fd00::/8,") == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("fd00::/8"),
    )


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-network", "10.0.0.1/8", "10.0.0.0/8,nope"])
def test_parse_networks_rejects_bad_entries_naming_them(bad):
    with pytest.raises(ValueError) as info:
        parse_networks(bad)
    culprit = bad.split(",")[-1].strip()
    assert repr(culprit) in str(info.value)


def test_image_input_error_carries_reason_and_code_and_pickles():
    import pickle

    err = ImageInputError("image_url returned HTTP 404", "IMAGE_HTTP_ERROR")
    assert (err.reason, err.code, str(err)) == (
        "image_url returned HTTP 404",
        "IMAGE_HTTP_ERROR",
        "image_url returned HTTP 404",
    )
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.code) == (err.reason, err.code)


def test_fetch_policy_defaults():
    p = FetchPolicy()
    assert p.max_bytes == 20 * 1024 * 1024
    assert (p.connect_timeout, p.total_timeout, p.max_redirects) == (5.0, 30.0, 3)
    assert p.allowed_networks == ()
    assert p.user_agent == "videogen-image-fetcher/1"
    with pytest.raises(Exception):
        p.max_bytes = 1  # frozen


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
