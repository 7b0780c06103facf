"""videojobs.net.safe_http over https: SNI, the certificate and the Host header name the original
hostname although the connection goes to the checked address."""
from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest

from tests.net_support import (  # noqa: F401 (fixtures are found by name)
    ORIGIN_IP,
    LoopbackServer,
    expect_error,
    fake_resolver,
    loopback_server,
    policy,
    routes,
    serve,
    stop_server,
)
from videojobs.net.safe_http import fetch_image_bytes

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
    server = LoopbackServer((ORIGIN_IP, 0), routes({"loopback_port": loopback_server.port}))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen_sni = []
    context.sni_callback = lambda sslsock, name, ctx: seen_sni.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.seen_sni = seen_sni
    thread = serve(server)
    yield server
    stop_server(server, thread)


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
