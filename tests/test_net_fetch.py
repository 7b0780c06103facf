"""videojobs.net.safe_http: fetching a job's input image from real HTTP servers on loopback,
what is fetched and what is refused (statuses, sizes, timeouts, redirects)."""
from __future__ import annotations

import hashlib
import io
import time

import pytest
from PIL import Image

from tests.net_support import (  # noqa: F401 (fixtures are found by name)
    GOOD_JPEG,
    GOOD_PNG,
    ORIGIN_IP,
    SMALL_MAX_BYTES,
    expect_error,
    fake_resolver,
    loopback_server,
    origin,
    policy,
)
from videojobs.net import safe_http
from videojobs.net.images import NormalizedImage, normalize_image
from videojobs.net.safe_http import FetchPolicy, fetch_image_bytes

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
    assert safe_http._too_large(FetchPolicy()).reason == "image larger than 20 MB"


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
