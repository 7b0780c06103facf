"""`torchrun --nproc_per_node=N manage.py run_inference_daemon` (or plain `manage.py ...` for N = 1)."""
from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Hold the Wan I2V pipeline on every rank and execute queued video jobs."

    def add_arguments(self, parser):
        parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs (benchmarks)")

    def handle(self, *args, **options):
        from inference.daemon.main import STARTUP_ERRORS, main  # lazy: keeps torch out of `manage.py help`

        try:
            code = main(max_jobs=options["max_jobs"])
        except STARTUP_ERRORS as exc:
            raise CommandError(str(exc)) from None
        if code:
            sys.exit(code)
