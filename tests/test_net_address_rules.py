"""videojobs.net.addresses: the SSRF rules, proven by requests that never happen (a server on
127.0.0.1, which the test policy does not allow), and the allowed networks."""
from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest

from tests.net_support import (  # noqa: F401 (fixtures are found by name)
    GOOD_PNG,
    ORIGIN_IP,
    expect_error,
    fake_resolver,
    loopback_server,
    no_connect,
    origin,
    policy,
)
from videojobs.errors import ImageInputError
from videojobs.net.addresses import is_forbidden_address, parse_networks
from videojobs.net.safe_http import FetchPolicy, fetch_image_bytes


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
