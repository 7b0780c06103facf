"""Webhook transport: the signature, the address rules, one POST. No database access here;
``videojobs.services.webhooks`` decides when to send and records what happened.

A receiver checks ``X-Signature`` (``sha256=`` + hex HMAC-SHA256 with WEBHOOK_SECRET over
``"<X-Webhook-Timestamp>." + body``) and refuses timestamps older than a few minutes, so a
captured request cannot be replayed later. The address rules are the image fetcher's: the host
must resolve to public addresses only (or to WEBHOOK_ALLOWED_NETWORKS), the connection goes to
the address that was checked (no second lookup to rebind), and redirects are not followed.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Callable

from django.conf import settings

from videojobs.errors import ImageInputError, WebhookURLError
from videojobs.net import safe_http
from videojobs.net.addresses import parse_networks
from videojobs.net.safe_http import FetchPolicy

__all__ = [
    "EVENT_HEADER",
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Outcome",
    "check_url",
    "policy_from_settings",
    "post",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
EVENT_HEADER = "X-Webhook-Event"
ID_HEADER = "X-Webhook-Id"


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
    try:
        safe_http.checked_addresses(url, policy=policy, resolver=resolver)
    except ImageInputError as exc:
        raise WebhookURLError(exc.reason) from None


def post(url: str, *, body: bytes, headers: dict[str, str], policy: FetchPolicy,
         resolver: Callable | None = None) -> Outcome:
    """POST ``body`` once. Any 2xx is delivered; a redirect, another status or a network error is
    not (the caller retries later)."""
    started = time.monotonic()
    try:
        status = safe_http.post(url, body=body, headers=headers, policy=policy, resolver=resolver)
    except ImageInputError as exc:
        return Outcome(ok=False, status_code=None, error=exc.reason, seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    if 200 <= status < 300:
        return Outcome(ok=True, status_code=status, error="", seconds=seconds)
    return Outcome(ok=False, status_code=status, error=f"the receiver answered HTTP {status}", seconds=seconds)


def policy_from_settings() -> FetchPolicy:
    """The address rules and time limits for webhook_url, from WEBHOOK_* settings."""
    return FetchPolicy(
        connect_timeout=min(5.0, settings.WEBHOOK_TIMEOUT),
        total_timeout=settings.WEBHOOK_TIMEOUT,
        allowed_networks=parse_networks(",".join(settings.WEBHOOK_ALLOWED_NETWORKS)),
        user_agent="videogen-webhook/1",
        subject="webhook_url",
    )
