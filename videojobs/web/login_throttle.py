"""The login throttle's two hooks into django-axes (configured in config/settings.py), which counts
failed logins in the database so that every gunicorn worker sees the same counts: the client's
address behind the reverse proxy, and the answer to a login while it is locked out, the same
login form, saying so, with 429 and Retry-After."""
from __future__ import annotations

import ipaddress
import math

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse


def client_address(request) -> str | None:
    """The address the login throttle counts: REMOTE_ADDR, or, behind TRUSTED_PROXY_COUNT
    proxies, the address the nearest of them saw (that many entries from the right of
    X-Forwarded-For). Entries a client writes itself stand further left and are never read."""
    count = settings.TRUSTED_PROXY_COUNT
    if count:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= count:
            address = _address(hops[-count])
            if address:
                return address
    return _address(request.META.get("REMOTE_ADDR", ""))


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def lockout_message() -> str:
    minutes = lockout_seconds() // 60
    return (f"Too many failed logins for this username or from this address. Try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}.")


def lockout_seconds() -> int:
    return math.ceil(settings.AXES_COOLOFF_TIME.total_seconds())


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """The login form the client posted to (the site's or the admin's), empty but for the
    username, with the lockout's message; 429 and Retry-After."""
    username = ((credentials or {}).get("username") or request.POST.get("username") or "")[:150]
    message = lockout_message()
    if request.path == reverse("admin:login"):
        context = {
            **admin.site.each_context(request),
            "title": "Log in",
            "subtitle": None,
            "app_path": request.get_full_path(),
            "form": AdminAuthenticationForm(request, initial={"username": username}),
            REDIRECT_FIELD_NAME: request.POST.get(REDIRECT_FIELD_NAME) or reverse("admin:index"),
            "lockout": message,
        }
        response = render(request, "admin/login.html", context, status=429)
    else:
        context = {
            "form": AuthenticationForm(request, initial={"username": username}),
            REDIRECT_FIELD_NAME: request.POST.get(REDIRECT_FIELD_NAME, ""),
            "lockout": message,
        }
        response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(lockout_seconds())
    return response
