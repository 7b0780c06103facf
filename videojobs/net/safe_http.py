"""One SSRF-checked GET and one POST, each bounded by an overall deadline.

Pure Python: nothing from Django, no torch. The host is resolved once under the rules of
:mod:`videojobs.net.addresses`, and the connection is then made to that validated IP itself --
with the original ``Host`` header and, for https, the original hostname for SNI and
certificate verification -- so DNS rebinding between check and connect is impossible.

* :func:`get` (and :func:`fetch_image_bytes`, the image fetch) follows redirects by hand and
  validates every hop the same way; a byte cap and the deadline (enforced by a watchdog that
  shuts the socket down, so a server trickling bytes is cut off) bound the download.
* :func:`post` sends a body once to the first checked address and follows no redirect.

Every failure is raised as :class:`videojobs.errors.ImageInputError`, whose ``reason`` names
``FetchPolicy.subject`` and is safe to show to the user.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urljoin

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError, SSLError
from urllib3.util.ssl_match_hostname import CertificateError as _HostnameMismatch

from videojobs.errors import ErrorCode, ImageInputError
from videojobs.net.addresses import IPNetwork, Target, parse_target, resolve
from videojobs.net.deadline import Deadline

__all__ = ["FetchPolicy", "checked_addresses", "fetch_image_bytes", "get", "post"]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_SIZE = 64 * 1024
_MAX_RESPONSE_BYTES = 64 * 1024  # what post() reads of an answer it does not use


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for :func:`get` and :func:`post`.

    ``allowed_networks`` lists networks that may be reached although they are not public
    (e.g. an internal image store); by default only globally routable addresses are.
    ``ca_certs`` optionally names a CA bundle file for https verification (default: the
    system trust store).
    """

    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 5.0
    total_timeout: float = 30.0
    max_redirects: int = 3
    allowed_networks: tuple[IPNetwork, ...] = ()
    user_agent: str = "videogen-image-fetcher/1"
    # The request field a reason names ("image_url host could not be resolved"): the webhook
    # sender uses these same rules for webhook_url.
    subject: str = "image_url"
    ca_certs: str | None = None


# --- connections watched by the deadline --------------------------------------------


def _deadline(policy: FetchPolicy) -> Deadline:
    return Deadline(policy.total_timeout, policy.subject)


class _DeadlineWatched:
    """Hands every new socket to the deadline's watchdog (mixed into urllib3's connections)."""

    deadline: Deadline | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        if self.deadline is not None:
            self.deadline.watch(sock)
        return sock


class _GuardedHTTPConnection(_DeadlineWatched, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_DeadlineWatched, HTTPSConnection):
    pass


# --- errors --------------------------------------------------------------------------


def _too_large(policy: FetchPolicy) -> ImageInputError:
    return ImageInputError(f"image larger than {_format_size(policy.max_bytes)}", ErrorCode.IMAGE_TOO_LARGE)


def _format_size(n: int) -> str:
    mib = 1024 * 1024
    if n >= mib and n % mib == 0:
        return f"{n // mib} MB"
    if n >= mib:
        return f"{n / mib:.1f} MB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KB"
    return f"{n} bytes"


def _find_cause(exc: BaseException, kinds: tuple[type, ...]) -> BaseException | None:
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, kinds):
            return current
        current = current.__cause__ or current.__context__
    return None


def _unreachable(policy: FetchPolicy, detail: str) -> ImageInputError:
    return ImageInputError(f"{policy.subject} could not be reached: {detail}", ErrorCode.IMAGE_UNREACHABLE)


def _network_error(exc: BaseException, policy: FetchPolicy, deadline: Deadline, connecting: bool) -> ImageInputError:
    """Translate a low-level failure into an ImageInputError."""
    if deadline.expired():
        return deadline.timeout_error()
    if isinstance(exc, ImageInputError):
        return exc
    if _find_cause(exc, (ssl.SSLCertVerificationError, _HostnameMismatch)) is not None or (
            isinstance(exc, SSLError) and "certificate" in str(exc).lower()):
        return _unreachable(policy, "TLS certificate verification failed")
    if _find_cause(exc, (ssl.SSLError, SSLError)) is not None:
        return _unreachable(policy, "TLS handshake failed")
    if isinstance(exc, NewConnectionError) or _find_cause(exc, (ConnectionRefusedError,)):
        if _find_cause(exc, (ConnectionRefusedError,)) is not None:
            detail = "connection refused"
        else:
            os_err = _find_cause(exc, (OSError,))
            detail = (getattr(os_err, "strerror", None) or "connection failed").lower()
        return _unreachable(policy, detail)
    if isinstance(exc, ConnectTimeoutError) or (
            connecting and _find_cause(exc, (socket.timeout, TimeoutError)) is not None):
        return ImageInputError(f"{policy.subject} timed out after {policy.connect_timeout:g} s while connecting",
                               ErrorCode.IMAGE_TIMEOUT)
    if isinstance(exc, ReadTimeoutError) or _find_cause(exc, (socket.timeout, TimeoutError)):
        return deadline.timeout_error()
    if _find_cause(exc, (ConnectionResetError,)) is not None:
        return _unreachable(policy, "connection reset by the server")
    return _unreachable(policy, "the server closed the connection or sent an invalid response")


# --- one connection, one request -----------------------------------------------------


def _open(target: Target, ip: str, policy: FetchPolicy, deadline: Deadline) -> HTTPConnection:
    remaining = deadline.remaining()
    if remaining <= 0:
        raise deadline.timeout_error()
    connect_timeout = max(0.001, min(policy.connect_timeout, remaining))
    conn: HTTPConnection
    if target.scheme == "https":
        conn = _GuardedHTTPSConnection(ip, target.port, timeout=connect_timeout, server_hostname=target.host,
                                       assert_hostname=target.host, cert_reqs="CERT_REQUIRED", ca_certs=policy.ca_certs)
    else:
        conn = _GuardedHTTPConnection(ip, target.port, timeout=connect_timeout)
    conn.deadline = deadline
    # No HTTP proxy from the environment and no connection reuse: always our socket.
    try:
        conn.connect()
    except BaseException:
        conn.close()
        raise
    return conn


def _connect(target: Target, ip: str, policy: FetchPolicy, deadline: Deadline) -> HTTPConnection:
    """A connection to the checked ``ip``; failures translated for the user."""
    try:
        return _open(target, ip, policy, deadline)
    except ImageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated for the user
        raise _network_error(exc, policy, deadline, connecting=True) from None


def _get_once(target: Target, ip: str, policy: FetchPolicy, deadline: Deadline, accept: str):
    """One GET.  Returns (status, headers, body_or_None, conn) -- caller closes conn."""
    conn = _connect(target, ip, policy, deadline)
    try:
        sock = conn.sock
        conn.timeout = max(0.001, deadline.remaining())
        headers = {"Host": target.host_header, "User-Agent": policy.user_agent, "Accept": accept,
                   "Accept-Encoding": "identity", "Connection": "close"}
        conn.request("GET", target.request_uri, headers=headers, preload_content=False,
                     decode_content=False, enforce_content_length=True)
        resp = conn.getresponse()
        if deadline.expired():
            raise deadline.timeout_error()
        status = resp.status
        if status in _REDIRECT_STATUSES or not 200 <= status < 300:
            return status, resp.headers, None, conn
        _check_declared_length(resp.headers.get("Content-Length"), policy)
        body = _read_body(resp, sock, policy, deadline)
        return status, resp.headers, body, conn
    except ImageInputError:
        conn.close()
        raise
    except Exception as exc:  # noqa: BLE001 - translated for the user
        conn.close()
        raise _network_error(exc, policy, deadline, connecting=False) from None


def _check_declared_length(length: str | None, policy: FetchPolicy) -> None:
    if length is None:
        return
    try:
        declared = int(length.strip())
    except ValueError:
        return
    if declared > policy.max_bytes:
        raise _too_large(policy)


def _read_body(resp, sock, policy: FetchPolicy, deadline: Deadline) -> bytes:
    buf = bytearray()
    read1 = getattr(resp, "read1", None)
    while True:
        remaining = deadline.remaining()
        if remaining <= 0 or deadline.fired:
            raise deadline.timeout_error()
        if sock is not None:
            try:
                sock.settimeout(max(0.001, remaining))
            except OSError:
                pass
        want = min(_CHUNK_SIZE, policy.max_bytes + 1 - len(buf))
        chunk = read1(want, decode_content=False) if read1 else resp.read(want, decode_content=False)
        if deadline.fired:
            # The watchdog shut the socket down; what looked like EOF is not one.
            raise deadline.timeout_error()
        if not chunk:
            break
        buf += chunk
        if len(buf) > policy.max_bytes:
            raise _too_large(policy)
    return bytes(buf)


def _post_once(target: Target, ip: str, body: bytes, headers: dict[str, str], policy: FetchPolicy,
               deadline: Deadline, content_type: str) -> int:
    conn = _connect(target, ip, policy, deadline)
    try:
        conn.timeout = max(0.001, deadline.remaining())
        conn.request("POST", target.request_uri, body=body, headers={
            "Host": target.host_header, "User-Agent": policy.user_agent, "Content-Type": content_type,
            "Content-Length": str(len(body)), "Connection": "close", **headers,
        }, preload_content=False)
        response = conn.getresponse()
        response.read(_MAX_RESPONSE_BYTES, decode_content=False)  # the receiver's answer is not used
        return response.status
    except ImageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated for the user
        raise _network_error(exc, policy, deadline, connecting=False) from None
    finally:
        conn.close()


# --- the public requests -------------------------------------------------------------


def _checked_target(url: str, policy: FetchPolicy, resolver: Callable, deadline: Deadline, *,
                    redirected: bool) -> tuple[Target, list[str]]:
    target = parse_target(url, redirected=redirected, subject=policy.subject)
    addresses = resolve(target, resolver=resolver, deadline=deadline, allowed_networks=policy.allowed_networks,
                        subject=policy.subject, redirected=redirected)
    return target, addresses


def checked_addresses(url: str, *, policy: FetchPolicy, resolver: Callable | None = None) -> list[str]:
    """The addresses a request to ``url`` would connect to, once the URL and every address it
    resolves to passed the rules; nothing is connected to. Raises ImageInputError."""
    deadline = _deadline(policy)
    try:
        return _checked_target(url, policy, resolver or socket.getaddrinfo, deadline, redirected=False)[1]
    finally:
        deadline.close()


def post(url: str, *, body: bytes, headers: dict[str, str], policy: FetchPolicy,
         resolver: Callable | None = None, content_type: str = "application/json") -> int:
    """POST ``body`` once to the first checked address of ``url`` and return the HTTP status;
    a redirect is not followed. ``headers`` are added to (and may replace) the request's own.
    Raises ImageInputError."""
    deadline = _deadline(policy)
    try:
        target, addresses = _checked_target(url, policy, resolver or socket.getaddrinfo, deadline,
                                            redirected=False)
        return _post_once(target, addresses[0], body, headers, policy, deadline, content_type)
    finally:
        deadline.close()


def _get_from_any(url: str, policy: FetchPolicy, resolver: Callable, deadline: Deadline, accept: str, *,
                  redirected: bool):
    """One GET of ``url`` (no redirect followed): (status, headers, body_or_None)."""
    target, addresses = _checked_target(url, policy, resolver, deadline, redirected=redirected)
    last_error: ImageInputError | None = None
    for ip in addresses:
        try:
            status, headers, body, conn = _get_once(target, ip, policy, deadline, accept)
        except ImageInputError as exc:
            # Only connection failures move on to the next address.
            if exc.code != ErrorCode.IMAGE_UNREACHABLE or deadline.expired():
                raise
            last_error = exc
            continue
        conn.close()
        return status, headers, body
    assert last_error is not None
    raise last_error


def _redirect_target(url: str, status: int, headers, redirects: int, policy: FetchPolicy) -> str:
    location = headers.get("Location")
    if not location:
        raise ImageInputError(f"{policy.subject} returned HTTP {status} without a Location",
                              ErrorCode.IMAGE_HTTP_ERROR)
    if redirects >= policy.max_redirects:
        raise ImageInputError(f"{policy.subject} redirected too many times (more than {policy.max_redirects})",
                              ErrorCode.IMAGE_TOO_MANY_REDIRECTS)
    return urljoin(url.split("#", 1)[0], location.strip())


def get(url: str, *, policy: FetchPolicy, resolver: Callable | None = None, accept: str = "*/*") -> bytes:
    """GET ``url`` under ``policy`` and return the body of its 2xx answer.

    ``resolver`` has the signature of :func:`socket.getaddrinfo` (called as
    ``resolver(host, port, 0, socket.SOCK_STREAM)``); None means ``socket.getaddrinfo``,
    looked up at call time.  Redirects are followed, each hop checked anew; another status
    is an error.  Raises :class:`ImageInputError`.
    """
    resolver = resolver or socket.getaddrinfo
    deadline = _deadline(policy)
    try:
        current, redirects = url, 0
        while True:
            status, headers, body = _get_from_any(current, policy, resolver, deadline, accept,
                                                  redirected=redirects > 0)
            if status in _REDIRECT_STATUSES:
                current = _redirect_target(current, status, headers, redirects, policy)
                redirects += 1
                continue
            if not 200 <= status < 300:
                raise ImageInputError(f"{policy.subject} returned HTTP {status}", ErrorCode.IMAGE_HTTP_ERROR)
            assert body is not None
            return body
    finally:
        deadline.close()


def fetch_image_bytes(url: str, *, policy: FetchPolicy, resolver: Callable | None = None) -> bytes:
    """Download the image at ``url`` under ``policy`` (a :func:`get` asking for ``image/*``).
    Raises :class:`ImageInputError`; decode the bytes with
    :func:`videojobs.net.images.normalize_image`."""
    return get(url, policy=policy, resolver=resolver, accept="image/*")
