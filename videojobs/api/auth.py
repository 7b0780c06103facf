"""Who is calling: an API key (``Authorization: Bearer <key>``), a logged-in user, or nobody.

Keys are djangorestframework-api-key's: stored as a SHA-512 hash beside an 8-character visible
prefix, created and revoked in the admin (or ``manage.py create_api_key``, which prints a new
key once), optionally expiring. We use the library rather than our own model for exactly
that: hashing, constant-time checks, revocation, expiry and the admin are done and maintained
there; what we add is the Bearer form and the owner a job is filed under.

Every job has an owner: ``key:<prefix>`` for a key, ``user:<id>`` for a logged-in user (the
job page), ``""`` for an anonymous caller where keys are not required (the development
default). A caller sees, cancels and retries only its own jobs; the admin sees all.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission


@dataclass(frozen=True)
class Owner:
    """The authenticated principal of an API request (DRF's request.user)."""

    id: str  # what jobs are filed under
    label: str  # for logs and the admin

    @property
    def is_authenticated(self) -> bool:
        return bool(self.id)


ANONYMOUS = Owner(id="", label="anonymous")


def anonymous() -> Owner:
    """DRF's UNAUTHENTICATED_USER: a caller without a key or a session."""
    return ANONYMOUS


class BearerAPIKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        # 1. A key in the Authorization header: valid, or a 401 (also where keys are optional).
        header = request.META.get("HTTP_AUTHORIZATION", "")
        keyword, _, key = header.partition(" ")
        if keyword.lower() == self.keyword.lower():
            return self._from_key(key.strip())
        # 2. A logged-in user of the job page (the session the admin uses too).
        from django.contrib.auth import get_user

        user = get_user(request._request)
        if user.is_authenticated:
            # A cookie travels with any site's request: session writes need the CSRF token.
            SessionAuthentication().enforce_csrf(request)
            return Owner(id=f"user:{user.pk}", label=user.get_username()), None
        return None

    def _from_key(self, key: str):
        from rest_framework_api_key.models import APIKey

        try:
            api_key = APIKey.objects.get_from_key(key)  # unrevoked, hash checked in constant time
        except APIKey.DoesNotExist:
            api_key = None
        if api_key is None or api_key.has_expired:
            raise exceptions.AuthenticationFailed("the API key is unknown, revoked or expired")
        return Owner(id=f"key:{api_key.prefix}", label=api_key.name), api_key

    def authenticate_header(self, request) -> str:
        return self.keyword


class KeyRequiredWhenConfigured(BasePermission):
    """API_KEYS_REQUIRED: anonymous callers get a 401 (production's default)."""

    message = "this service requires an API key: send Authorization: Bearer <key>"

    def has_permission(self, request, view) -> bool:
        return not settings.API_KEYS_REQUIRED or bool(getattr(request.user, "is_authenticated", False))


def owner_of(request) -> str:
    user = request.user
    return user.id if isinstance(user, Owner) else ""


def page_owner(request) -> str | None:
    """The owner of the job page's visitor (a plain Django request): the same ``user:<id>`` as
    the API gives a session, ``""`` for an anonymous visitor where keys are not required, and
    None where they are: the visitor must log in first."""
    user = request.user
    if user.is_authenticated:
        return f"user:{user.pk}"
    return None if settings.API_KEYS_REQUIRED else ""
