"""manage.py create_api_key NAME [--expires-days N]: a new client key, printed once.

The key is stored hashed (only its 8-character prefix stays readable); revoke it in the admin
(API Key Permissions -> API keys) or with `manage.py create_api_key --revoke PREFIX`.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone


class Command(BaseCommand):
    help = "Create an API key for a client and print it once (or revoke one by its prefix)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="who the key is for (shown in the admin)")
        parser.add_argument("--expires-days", type=int, default=None, help="the key stops working after N days")
        parser.add_argument("--revoke", metavar="PREFIX", help="revoke the key with this prefix instead")

    def handle(self, *args: Any, **options: Any) -> None:
        from rest_framework_api_key.models import APIKey

        if options["revoke"]:
            updated = APIKey.objects.filter(prefix=options["revoke"], revoked=False).update(revoked=True)
            if not updated:
                raise CommandError(f"no active key with prefix {options['revoke']!r}")
            self.stdout.write(f"revoked {options['revoke']}")
            return
        if not options["name"]:
            raise CommandError("give the key a name: manage.py create_api_key NAME")
        expiry = None
        if options["expires_days"] is not None:
            if options["expires_days"] < 1:
                raise CommandError("--expires-days must be >= 1")
            expiry = timezone.now() + timedelta(days=options["expires_days"])
        api_key, key = APIKey.objects.create_key(name=options["name"], expiry_date=expiry)
        self.stderr.write(f"API key for {api_key.name} (prefix {api_key.prefix}); it is shown only now:")
        self.stdout.write(key)
