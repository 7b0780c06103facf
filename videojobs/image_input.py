"""Fetch and normalise the input image of a job.

Pure Python: nothing from Django, no torch.  Two steps, usable on their own:

* :func:`fetch_image_bytes` downloads ``image_url`` with SSRF protection.  The host is
  resolved once, every resolved address must be public (or inside
  ``FetchPolicy.allowed_networks``), and the connection is then made to that validated
  IP itself -- with the original ``Host`` header and, for https, the original hostname
  for SNI and certificate verification -- so DNS rebinding between check and connect is
  impossible.  Redirects are followed by hand and every hop is validated the same way.
  A byte cap and an overall deadline (enforced by a watchdog that shuts the socket down,
  so a server trickling bytes is cut off) bound the download.
* :func:`normalize_image` decodes the bytes with Pillow under a pixel limit, applies the
  EXIF orientation, flattens to RGB on white and re-encodes as PNG.

Every failure a user can cause is raised as :class:`ImageInputError`, whose ``reason`` is
a short sentence safe to show to the user and whose ``code`` is a stable identifier.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable, Union
from urllib.parse import urljoin

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationParseError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import parse_url
from urllib3.util.ssl_match_hostname import CertificateError as _HostnameMismatch

from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "CODE_HTTP_ERROR",
    "CODE_NOT_AN_IMAGE",
    "CODE_TIMEOUT",
    "CODE_TOO_LARGE",
    "CODE_TOO_MANY_REDIRECTS",
    "CODE_UNREACHABLE",
    "CODE_URL_FORBIDDEN",
    "CODE_URL_INVALID",
    "ACCEPTED_FORMATS",
    "FetchPolicy",
    "ImageInputError",
    "NormalizedImage",
    "fetch_image_bytes",
    "is_forbidden_address",
    "normalize_image",
    "parse_networks",
]

CODE_HTTP_ERROR = "IMAGE_HTTP_ERROR"
CODE_NOT_AN_IMAGE = "IMAGE_NOT_AN_IMAGE"
CODE_TOO_LARGE = "IMAGE_TOO_LARGE"
CODE_URL_FORBIDDEN = "IMAGE_URL_FORBIDDEN"
CODE_URL_INVALID = "IMAGE_URL_INVALID"
CODE_TIMEOUT = "IMAGE_TIMEOUT"
CODE_UNREACHABLE = "IMAGE_UNREACHABLE"
CODE_TOO_MANY_REDIRECTS = "IMAGE_TOO_MANY_REDIRECTS"

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_SIZE = 64 * 1024
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Prefixes whose addresses embed an IPv4 address that a gateway will connect to.
_NAT64_PREFIXES = (
    ipaddress.ip_network("64:ff9b::/96"),  # RFC 6052 well-known prefix
    ipaddress.ip_network("64:ff9b:1::/48"),  # RFC 8215 local-use prefix
)

# Formats handed to Pillow.  Restricting them keeps decoders with a history of trouble
# (and EPS, which runs Ghostscript) away from untrusted bytes.  Multi-picture JPEGs from
# cameras are opened by the JPEG plugin and report their format as "MPO".
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


class ImageInputError(Exception):
    """The job's input image could not be used.

    ``reason`` is a sentence a user can act on (no server paths, no tracebacks);
    ``code`` is a stable machine-readable identifier such as ``IMAGE_HTTP_ERROR``.
    """

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __reduce__(self):  # keep it picklable (task queues store exceptions)
        return (type(self), (self.reason, self.code))

    def __repr__(self) -> str:
        return f"ImageInputError(reason={self.reason!r}, code={self.code!r})"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for :func:`fetch_image_bytes`.

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


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Parse a comma-separated list of CIDR networks ("10.1.0.0/16, 192.0.2.7").

    An empty (or blank) string gives ``()``.  Raises ``ValueError`` naming the bad entry.
    A bare address means a single-host network; host bits must not be set.
    """
    networks: list[IPNetwork] = []
    for raw in (value or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError(f"invalid network {entry!r} in network list: {exc}") from None
    return tuple(networks)


# --------------------------------------------------------------------------------------
# address policy


def is_forbidden_address(ip: IPAddress) -> bool:
    """True when ``ip`` is not a public unicast address (or embeds one that is not)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            # ::ffff:a.b.c.d reaches a.b.c.d itself: judge that address.
            return is_forbidden_address(ip.ipv4_mapped)
        embedded: list[ipaddress.IPv4Address] = []
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            # Tunnelled addresses: refuse outright, the real endpoint is not known.
            return True
        for prefix in _NAT64_PREFIXES:
            if ip in prefix:
                embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        # IPv4-compatible addresses (::a.b.c.d, deprecated) fall into ::/8, which is
        # reserved and refused below.
        if any(is_forbidden_address(v4) for v4 in embedded):
            return True
        if ip.scope_id:
            return True
    return bool(
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)
    )


def _is_allowed(ip: IPAddress, policy: FetchPolicy) -> bool:
    if any(ip in net for net in policy.allowed_networks):
        return True
    return not is_forbidden_address(ip)


# --------------------------------------------------------------------------------------
# fetching


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # hostname as used for resolution, SNI and certificate checks (no brackets)
    port: int
    host_header: str
    request_uri: str
    url: str


def _invalid(reason: str) -> ImageInputError:
    return ImageInputError(reason, CODE_URL_INVALID)


def _parse_target(url: str, *, redirected: bool, subject: str = "image_url") -> _Target:
    if not isinstance(url, str) or not url.strip():
        raise _invalid(f"{subject} is empty")
    url = url.strip()
    if len(url) > 8192:
        raise _invalid(f"{subject} is too long")
    try:
        parsed = parse_url(url)
    except (LocationParseError, ValueError):
        if redirected:
            raise _invalid(f"{subject} redirected to an invalid URL") from None
        raise _invalid(f"{subject} is not a valid URL") from None
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https"):
        if redirected:
            raise ImageInputError(
                f"{subject} redirected to a URL that does not use http or https",
                CODE_URL_FORBIDDEN,
            )
        raise _invalid(f"{subject} must use http or https")
    if not parsed.host:
        raise _invalid(f"{subject} has no host")
    if parsed.auth:
        raise _invalid(f"{subject} must not contain a user name or password")
    host = parsed.host.lower()
    bare_host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare_host or "%" in bare_host:
        raise _invalid(f"{subject} has an invalid host")
    name = bare_host.rstrip(".") or bare_host
    default_port = 443 if scheme == "https" else 80
    port = parsed.port if parsed.port is not None else default_port
    if not 0 < port < 65536:
        raise _invalid(f"{subject} has an invalid port")
    host_header = f"[{name}]" if ":" in name else name
    if port != default_port:
        host_header = f"{host_header}:{port}"
    return _Target(
        scheme=scheme,
        host=name,
        port=port,
        host_header=host_header,
        request_uri=parsed.request_uri or "/",
        url=url,
    )


def _resolve(
    target: _Target,
    policy: FetchPolicy,
    resolver: Callable,
    deadline: "_Deadline",
    *,
    redirected: bool,
) -> list[str]:
    """Resolve once and return the validated addresses, in resolver order.

    The resolver runs in a helper thread so that a resolver that hangs (the system one
    cannot be interrupted) still cannot hold the caller past the overall deadline.
    """
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["infos"] = resolver(target.host, target.port, 0, socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="image-url-resolve", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline.remaining()))
    if worker.is_alive() or deadline.expired():
        raise _timeout_error(policy)
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, (socket.gaierror, UnicodeError, OSError)):
            raise ImageInputError(
                f"{policy.subject} host could not be resolved", CODE_UNREACHABLE
            ) from None
        raise error
    infos = outcome.get("infos")
    addresses: list[IPAddress] = []
    for info in infos or ():
        try:
            sockaddr = info[4]
            text = str(sockaddr[0]).split("%", 1)[0]
            ip = ipaddress.ip_address(text)
        except (IndexError, TypeError, ValueError):
            continue
        if info[0] not in (socket.AF_INET, socket.AF_INET6):
            continue
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise ImageInputError(f"{policy.subject} host could not be resolved", CODE_UNREACHABLE)
    for ip in addresses:
        if not _is_allowed(ip, policy):
            if redirected:
                raise ImageInputError(
                    f"{policy.subject} redirected to a non-public address", CODE_URL_FORBIDDEN
                )
            raise ImageInputError(
                f"{policy.subject} host resolves to a non-public address ({ip})",
                CODE_URL_FORBIDDEN,
            )
    return [str(ip) for ip in addresses]


class _Deadline:
    """Overall deadline; at expiry a watchdog shuts down every socket it was given.

    ``shutdown`` (unlike ``close``) is safe while another thread is blocked in ``recv``
    on the same socket: the blocked call returns at once.  The watchdog holds ``dup``-ed
    descriptors, so it never touches a descriptor number the fetch has closed and the
    process may have reused.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.fired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def expired(self) -> bool:
        return self.fired or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        try:
            dup = sock.dup()
        except OSError:
            return
        with self._lock:
            self._socks.append(dup)
            fired = self.fired
        if fired:
            self._shutdown(dup)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            socks = list(self._socks)
        for sock in socks:
            self._shutdown(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass


class _DeadlineWatched:
    """Hands every new socket to the deadline's watchdog (mixed into urllib3's connections)."""

    deadline: _Deadline | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        if self.deadline is not None:
            self.deadline.watch(sock)
        return sock


class _GuardedHTTPConnection(_DeadlineWatched, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_DeadlineWatched, HTTPSConnection):
    pass


def _timeout_error(policy: FetchPolicy) -> ImageInputError:
    return ImageInputError(
        f"{policy.subject} timed out after {policy.total_timeout:g} s", CODE_TIMEOUT
    )


def _too_large(policy: FetchPolicy) -> ImageInputError:
    return ImageInputError(
        f"image larger than {_format_size(policy.max_bytes)}", CODE_TOO_LARGE
    )


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


def _network_error(exc: BaseException, policy: FetchPolicy, deadline: _Deadline, connecting: bool) -> ImageInputError:
    """Translate a low-level failure into an ImageInputError."""
    if deadline.expired():
        return _timeout_error(policy)
    if isinstance(exc, ImageInputError):
        return exc
    if _find_cause(exc, (ssl.SSLCertVerificationError, _HostnameMismatch)) is not None or (
        isinstance(exc, SSLError) and "certificate" in str(exc).lower()
    ):
        return ImageInputError(
            f"{policy.subject} could not be reached: TLS certificate verification failed",
            CODE_UNREACHABLE,
        )
    if _find_cause(exc, (ssl.SSLError, SSLError)) is not None:
        return ImageInputError(
            f"{policy.subject} could not be reached: TLS handshake failed", CODE_UNREACHABLE
        )
    if isinstance(exc, NewConnectionError) or _find_cause(exc, (ConnectionRefusedError,)):
        if _find_cause(exc, (ConnectionRefusedError,)) is not None:
            detail = "connection refused"
        else:
            os_err = _find_cause(exc, (OSError,))
            detail = (getattr(os_err, "strerror", None) or "connection failed").lower()
        return ImageInputError(f"{policy.subject} could not be reached: {detail}", CODE_UNREACHABLE)
    if isinstance(exc, ConnectTimeoutError) or (
        connecting and _find_cause(exc, (socket.timeout, TimeoutError)) is not None
    ):
        return ImageInputError(
            f"{policy.subject} timed out after {policy.connect_timeout:g} s while connecting",
            CODE_TIMEOUT,
        )
    if isinstance(exc, ReadTimeoutError) or _find_cause(exc, (socket.timeout, TimeoutError)):
        return _timeout_error(policy)
    if _find_cause(exc, (ConnectionResetError,)) is not None:
        return ImageInputError(
            f"{policy.subject} could not be reached: connection reset by the server",
            CODE_UNREACHABLE,
        )
    return ImageInputError(
        f"{policy.subject} could not be reached: the server closed the connection or sent an "
        "invalid response",
        CODE_UNREACHABLE,
    )


def _open(target: _Target, ip: str, policy: FetchPolicy, deadline: _Deadline) -> HTTPConnection:
    remaining = deadline.remaining()
    if remaining <= 0:
        raise _timeout_error(policy)
    connect_timeout = max(0.001, min(policy.connect_timeout, remaining))
    conn: HTTPConnection
    if target.scheme == "https":
        conn = _GuardedHTTPSConnection(
            ip,
            target.port,
            timeout=connect_timeout,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=policy.ca_certs,
        )
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


def _fetch_once(target: _Target, ip: str, policy: FetchPolicy, deadline: _Deadline):
    """One request.  Returns (status, headers, body_or_None, conn) -- caller closes conn."""
    try:
        conn = _open(target, ip, policy, deadline)
    except ImageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated for the user
        raise _network_error(exc, policy, deadline, connecting=True) from None
    try:
        sock = conn.sock
        conn.timeout = max(0.001, deadline.remaining())
        headers = {
            "Host": target.host_header,
            "User-Agent": policy.user_agent,
            "Accept": "image/*",
            "Accept-Encoding": "identity",
            "Connection": "close",
        }
        conn.request(
            "GET",
            target.request_uri,
            headers=headers,
            preload_content=False,
            decode_content=False,
            enforce_content_length=True,
        )
        resp = conn.getresponse()
        if deadline.expired():
            raise _timeout_error(policy)
        status = resp.status
        if status in _REDIRECT_STATUSES or not 200 <= status < 300:
            return status, resp.headers, None, conn
        length = resp.headers.get("Content-Length")
        if length is not None:
            try:
                declared = int(length.strip())
            except ValueError:
                declared = None
            if declared is not None and declared > policy.max_bytes:
                raise _too_large(policy)
        body = _read_body(resp, sock, policy, deadline)
        return status, resp.headers, body, conn
    except ImageInputError:
        conn.close()
        raise
    except Exception as exc:  # noqa: BLE001 - translated for the user
        conn.close()
        raise _network_error(exc, policy, deadline, connecting=False) from None


def _read_body(resp, sock, policy: FetchPolicy, deadline: _Deadline) -> bytes:
    buf = bytearray()
    read1 = getattr(resp, "read1", None)
    while True:
        remaining = deadline.remaining()
        if remaining <= 0 or deadline.fired:
            raise _timeout_error(policy)
        if sock is not None:
            try:
                sock.settimeout(max(0.001, remaining))
            except OSError:
                pass
        want = min(_CHUNK_SIZE, policy.max_bytes + 1 - len(buf))
        chunk = read1(want, decode_content=False) if read1 else resp.read(want, decode_content=False)
        if deadline.fired:
            # The watchdog shut the socket down; what looked like EOF is not one.
            raise _timeout_error(policy)
        if not chunk:
            break
        buf += chunk
        if len(buf) > policy.max_bytes:
            raise _too_large(policy)
    return bytes(buf)


def fetch_image_bytes(
    url: str,
    *,
    policy: FetchPolicy,
    resolver: Callable | None = None,
) -> bytes:
    """Download ``url`` under ``policy`` and return the body.

    ``resolver`` has the signature of :func:`socket.getaddrinfo` (called as
    ``resolver(host, port, 0, socket.SOCK_STREAM)``); None means ``socket.getaddrinfo``,
    looked up at call time.  Raises :class:`ImageInputError`.
    """
    resolver = resolver or socket.getaddrinfo
    deadline = _Deadline(policy.total_timeout)
    try:
        current = url
        redirects = 0
        while True:
            redirected = redirects > 0
            target = _parse_target(current, redirected=redirected, subject=policy.subject)
            addresses = _resolve(target, policy, resolver, deadline, redirected=redirected)
            result = None
            last_error: ImageInputError | None = None
            for ip in addresses:
                try:
                    result = _fetch_once(target, ip, policy, deadline)
                    break
                except ImageInputError as exc:
                    # Only connection failures move on to the next address.
                    if exc.code != CODE_UNREACHABLE or deadline.expired():
                        raise
                    last_error = exc
            if result is None:
                assert last_error is not None
                raise last_error
            status, headers, body, conn = result
            conn.close()
            if status in _REDIRECT_STATUSES:
                location = headers.get("Location")
                if not location:
                    raise ImageInputError(
                        f"{policy.subject} returned HTTP {status} without a Location",
                        CODE_HTTP_ERROR,
                    )
                if redirects >= policy.max_redirects:
                    raise ImageInputError(
                        f"{policy.subject} redirected too many times (more than "
                        f"{policy.max_redirects})",
                        CODE_TOO_MANY_REDIRECTS,
                    )
                redirects += 1
                current = urljoin(_without_fragment(current), location.strip())
                continue
            if not 200 <= status < 300:
                raise ImageInputError(f"{policy.subject} returned HTTP {status}", CODE_HTTP_ERROR)
            assert body is not None
            return body
    finally:
        deadline.close()


def _without_fragment(url: str) -> str:
    return url.split("#", 1)[0]


# --------------------------------------------------------------------------------------
# normalising


@dataclass(frozen=True)
class NormalizedImage:
    data: bytes  # PNG bytes
    sha256: str
    width: int
    height: int
    source_format: str


def _not_an_image() -> ImageInputError:
    return ImageInputError("image_url is not an image", CODE_NOT_AN_IMAGE)


def _too_many_pixels(width: int | None, height: int | None, max_pixels: int) -> ImageInputError:
    if width and height:
        return ImageInputError(
            f"image is {width}x{height} pixels; the limit is {max_pixels}", CODE_TOO_LARGE
        )
    return ImageInputError(
        f"image has too many pixels; the limit is {max_pixels}", CODE_TOO_LARGE
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


def normalize_image(data: bytes, *, max_pixels: int = 40_000_000) -> NormalizedImage:
    """Decode ``data`` and return it as an RGB PNG with its sha256.

    The size is read from the header and checked against ``max_pixels`` before any
    pixel data is decoded.  Only :data:`ACCEPTED_FORMATS` are decoded; animated images
    give their first frame.  Raises :class:`ImageInputError`.
    """
    if not data:
        raise _not_an_image()
    try:
        img = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, None, max_pixels) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise _not_an_image() from None
    with img:
        source_format = (img.format or "").upper() or "UNKNOWN"
        width, height = img.size
        if width <= 0 or height <= 0:
            raise _not_an_image()
        if width * height > max_pixels:
            raise _too_many_pixels(width, height, max_pixels)
        try:
            img.seek(0)
            img.load()
            try:
                oriented = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - a broken EXIF block is not fatal
                oriented = img
            rgb = _flatten_to_rgb(oriented if oriented is not None else img)
        except Image.DecompressionBombError:
            raise _too_many_pixels(width, height, max_pixels) from None
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError):
            raise ImageInputError(
                "image_url is not an image (the file is corrupt or truncated)",
                CODE_NOT_AN_IMAGE,
            ) from None
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
        source_format=source_format,
    )
