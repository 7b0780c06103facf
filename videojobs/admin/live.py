"""What the admin's pages share: read-only pages (whose lists and actions refuse a client's
malformed dates and ids instead of failing on them), the reload of a page while something
runs, and the short texts its pages show of the daemon's results."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.timesince import timesince


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the services write: nobody adds or edits them here; state changes go through the
    admin's actions, each calling a service. Their pages' script (the auto-refresh, the
    confirmations) and styles are static files: the Content-Security-Policy runs nothing inline."""

    class Media:
        css = {"all": ["videojobs/admin.css"]}
        js = ["videojobs/admin.js"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_changelist(self, request, **kwargs):
        return CheckedChangeList

    def response_action(self, request, queryset):
        """Django's action, once every selected id is one of this model's ids: a
        ``_selected_action`` of ``abc`` or a NUL byte is a message, not a 500 from the query."""
        pk = self.model._meta.pk
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                pk.to_python(value)
        except ValidationError:
            self.message_user(request, "The selection holds a value that is not a row's id; nothing was done.",
                              messages.ERROR)
            return None  # the changelist again, as for any action that did not run
        return super().response_action(request, queryset)


class CheckedChangeList(ChangeList):
    """Django's list, with a date past the calendar in the date hierarchy's filter
    (``?created_at__year=99999999999999999999``, or 9999 whose next year is 10000) refused as
    any bad filter is (the list again, ?e=1) instead of an OverflowError or a ValueError."""

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from exc


def excerpt(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, "..." marking the cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Seconds between reloads of a live page: the job list, an unfinished job, the workers.
REFRESH_SECONDS = 3
# The query parameter that pauses the reloads (the admin must not take it for a filter).
PAUSE_PARAM = "norefresh"


def take_pause_flag(request) -> bool:
    """Whether the page is paused; removes PAUSE_PARAM from the request so that the changelist
    does not read it as a field lookup."""
    if PAUSE_PARAM not in request.GET:
        return False
    query = request.GET.copy()
    del query[PAUSE_PARAM]
    request.GET = query
    return True


def refresh_context(request, *, live: bool, paused: bool, reason: str) -> dict[str, Any]:
    """The auto-refresh note: on while something runs, with links that pause and resume it and
    keep the page's own query string (its filters, search and page)."""
    query = request.GET.copy()
    resume = query.urlencode()
    query[PAUSE_PARAM] = "1"
    return {
        "live": live,
        "paused": paused,
        "seconds": REFRESH_SECONDS,
        "reason": reason,
        "pause_url": f"{request.path}?{query.urlencode()}",
        "resume_url": f"{request.path}?{resume}" if resume else request.path,
    }


# --- how the job page shows the daemon's result -----------------------------------------


def topology_text(topology: dict[str, Any] | None) -> str:
    """A topology in one line, e.g. "4 ranks: ulysses 2 x ring 1 x cfg 2, fsdp dit+t5"."""
    if not topology:
        return "-"
    parts = [" x ".join(f"{name} {topology.get(f'{name}_size', 1)}" for name in ("ulysses", "ring", "cfg"))]
    fsdp = [name for name in ("dit", "t5") if topology.get(f"{name}_fsdp")]
    if fsdp:
        parts.append("fsdp " + "+".join(fsdp))
    if topology.get("t5_cpu"):
        parts.append("t5 on cpu")
    if topology.get("vae_parallel"):
        parts.append("vae parallel")
    world = topology.get("world_size")
    return f"{world} rank{'s' if world != 1 else ''}: {', '.join(parts)}" if world else ", ".join(parts)


def compact(value: Any) -> str:
    """A cache report value on one line: {"cond": 3, "uncond": 3} -> "cond 3, uncond 3"."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {compact(item)}" for key, item in sorted(value.items())) or "-"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(str(item) for item in value) + "]"
    return str(value)


def seconds_text(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


def age_text(moment) -> str:
    """How long ago, short: "12 s ago", else Django's "3 minutes ago"."""
    seconds = (timezone.now() - moment).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 100 else f"{timesince(moment)} ago"
