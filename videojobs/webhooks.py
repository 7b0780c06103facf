"""Webhook transport: the signature, the address rules, one POST. No database access here;
``services.deliver_webhook`` decides when to send and records what happened.

A receiver checks ``X-Signature`` (``sha256=`` + hex HMAC-SHA256 with WEBHOOK_SECRET over
``"<X-Webhook-Timestamp>." + body``) and refuses timestamps older than a few minutes, so a
captured request cannot be replayed later. The address rules are the image fetcher's: the host
must resolve to public addresses only (or to WEBHOOK_ALLOWED_NETWORKS), the connection goes to
the address that was checked (no second lookup to rebind), and redirects are not followed.
"""
from __future__ import annotations

import hashlib
import hmac
import socket
import time
from dataclasses import dataclass
from typing import Callable

from videojobs.image_input import (
    FetchPolicy,
    ImageInputError,
    _Deadline,
    _network_error,
    _open,
    _parse_target,
    _resolve,
)

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
EVENT_HEADER = "X-Webhook-Event"
ID_HEADER = "X-Webhook-Id"
_MAX_RESPONSE_BYTES = 64 * 1024


class WebhookURLError(ValueError):
    """The webhook_url may not be used (not http(s), unresolvable, or not a public address)."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None
    error: str
    seconds: float


def sign(*, secret: str, timestamp: int, body: bytes) -> str:
    """The X-Signature value: "sha256=" + hex HMAC-SHA256 over "<timestamp>." + body."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(*, secret: str, timestamp: str, body: bytes, signature: str, tolerance_seconds: int = 300,
           now: float | None = None) -> bool:
    """What a receiver does: a fresh timestamp and a matching signature (constant-time compare)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret=secret, timestamp=sent, body=body), signature or "")


def check_url(url: str, *, policy: FetchPolicy, resolver: Callable | None = None) -> None:
    """At submit: refuse a webhook_url that delivery would refuse. Raises WebhookURLError."""
    deadline = _Deadline(policy.total_timeout)
    try:
        target = _parse_target(url, redirected=False, subject=policy.subject)
        _resolve(target, policy, resolver or socket.getaddrinfo, deadline, redirected=False)
    except ImageInputError as exc:
        raise WebhookURLError(exc.reason) from None
    finally:
        deadline.close()


def post(url: str, *, body: bytes, headers: dict[str, str], policy: FetchPolicy,
         resolver: Callable | None = None) -> Outcome:
    """POST ``body`` once. Any 2xx is delivered; a redirect, another status or a network error is
    not (the caller retries later)."""
    started = time.monotonic()
    deadline = _Deadline(policy.total_timeout)
    try:
        target = _parse_target(url, redirected=False, subject=policy.subject)
        address = _resolve(target, policy, resolver or socket.getaddrinfo, deadline, redirected=False)[0]
        status = _post_once(target, address, body, headers, policy, deadline)
    except ImageInputError as exc:
        return Outcome(ok=False, status_code=None, error=exc.reason, seconds=time.monotonic() - started)
    finally:
        deadline.close()
    seconds = time.monotonic() - started
    if 200 <= status < 300:
        return Outcome(ok=True, status_code=status, error="", seconds=seconds)
    return Outcome(ok=False, status_code=status, error=f"the receiver answered HTTP {status}", seconds=seconds)


def _post_once(target, address: str, body: bytes, headers: dict[str, str], policy: FetchPolicy,
               deadline: _Deadline) -> int:
    try:
        conn = _open(target, address, policy, deadline)
    except ImageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated into a reason for the admin
        raise _network_error(exc, policy, deadline, connecting=True) from None
    try:
        conn.timeout = max(0.001, deadline.remaining())
        conn.request("POST", target.request_uri, body=body, headers={
            "Host": target.host_header, "User-Agent": policy.user_agent, "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Connection": "close", **headers,
        }, preload_content=False)
        response = conn.getresponse()
        response.read(_MAX_RESPONSE_BYTES, decode_content=False)  # the receiver's answer is not used
        return response.status
    except ImageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated into a reason for the admin
        raise _network_error(exc, policy, deadline, connecting=False) from None
    finally:
        conn.close()


def policy_from_settings() -> FetchPolicy:
    from django.conf import settings

    from videojobs.image_input import parse_networks

    return FetchPolicy(
        connect_timeout=min(5.0, settings.WEBHOOK_TIMEOUT),
        total_timeout=settings.WEBHOOK_TIMEOUT,
        allowed_networks=parse_networks(",".join(settings.WEBHOOK_ALLOWED_NETWORKS)),
        user_agent="videogen-webhook/1",
        subject="webhook_url",
    )

