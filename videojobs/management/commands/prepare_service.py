"""manage.py prepare_service: what `make run` does before anything serves (migrate, collectstatic,
register the periodic sweeps), for a service started by systemd (the web unit's ExecStartPre).
Idempotent; a host whose SERVICE_ROLES has no "web" does nothing.
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from config.service import prepare


class Command(BaseCommand):
    help = "Migrate, collect static files and register the periodic sweeps, as `make run` does at start."

    def handle(self, *args: Any, **options: Any) -> None:
        prepare()
