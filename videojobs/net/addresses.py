"""The SSRF rules: which addresses a request on a user's behalf may reach.

Pure Python: nothing from Django, no torch. A URL is parsed into a :class:`Target` by
:func:`parse_target`; :func:`resolve` looks its host up once and returns the addresses only
when every one of them is public (or inside the allowed networks), so the caller can connect
to a checked address itself and DNS rebinding between check and connect is impossible.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Union

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from videojobs.errors import ErrorCode, ImageInputError
from videojobs.net.deadline import Deadline

__all__ = [
    "IPAddress",
    "IPNetwork",
    "Target",
    "is_allowed",
    "is_forbidden_address",
    "parse_networks",
    "parse_target",
    "resolve",
]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Prefixes whose addresses embed an IPv4 address that a gateway will connect to.
_NAT64_PREFIXES = (
    ipaddress.ip_network("64:ff9b::/96"),  # RFC 6052 well-known prefix
    ipaddress.ip_network("64:ff9b:1::/48"),  # RFC 8215 local-use prefix
)


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


def is_allowed(ip: IPAddress, allowed_networks: Iterable[IPNetwork] = ()) -> bool:
    """True when ``ip`` may be reached: inside ``allowed_networks``, or public."""
    if any(ip in net for net in allowed_networks):
        return True
    return not is_forbidden_address(ip)


# --------------------------------------------------------------------------------------
# URL targets


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # hostname as used for resolution, SNI and certificate checks (no brackets)
    port: int
    host_header: str
    request_uri: str
    url: str


def _invalid(reason: str) -> ImageInputError:
    return ImageInputError(reason, ErrorCode.IMAGE_URL_INVALID)


def parse_target(url: str, *, redirected: bool = False, subject: str = "image_url") -> Target:
    """Where ``url`` points (http or https only, no credentials). Raises ImageInputError;
    ``subject`` names the request field in the reason, ``redirected`` says the URL came from
    a Location header."""
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
                ErrorCode.IMAGE_URL_FORBIDDEN,
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
    return Target(
        scheme=scheme,
        host=name,
        port=port,
        host_header=host_header,
        request_uri=parsed.request_uri or "/",
        url=url,
    )


# --------------------------------------------------------------------------------------
# resolution


def resolve(
    target: Target,
    *,
    resolver: Callable,
    deadline: Deadline,
    allowed_networks: Iterable[IPNetwork] = (),
    subject: str = "image_url",
    redirected: bool = False,
) -> list[str]:
    """Resolve once and return the validated addresses, in resolver order.

    ``resolver`` has the signature of :func:`socket.getaddrinfo`. It runs in a helper thread
    so that a resolver that hangs (the system one cannot be interrupted) still cannot hold
    the caller past ``deadline``. Raises ImageInputError.
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
        raise deadline.timeout_error()
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, (socket.gaierror, UnicodeError, OSError)):
            raise _unresolvable(subject) from None
        raise error
    return _checked(_addresses(outcome.get("infos")), tuple(allowed_networks), subject, redirected)


def _unresolvable(subject: str) -> ImageInputError:
    return ImageInputError(f"{subject} host could not be resolved", ErrorCode.IMAGE_UNREACHABLE)


def _addresses(infos) -> list[IPAddress]:
    """The distinct IPv4/IPv6 addresses of a getaddrinfo answer, in its order."""
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
    return addresses


def _checked(addresses: list[IPAddress], allowed_networks: tuple[IPNetwork, ...], subject: str,
             redirected: bool) -> list[str]:
    if not addresses:
        raise _unresolvable(subject)
    for ip in addresses:
        if not is_allowed(ip, allowed_networks):
            if redirected:
                raise ImageInputError(
                    f"{subject} redirected to a non-public address", ErrorCode.IMAGE_URL_FORBIDDEN
                )
            raise ImageInputError(
                f"{subject} host resolves to a non-public address ({ip})",
                ErrorCode.IMAGE_URL_FORBIDDEN,
            )
    return [str(ip) for ip in addresses]
