#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if sys.argv[1:2] in (["run_service"], ["submit_video"]):
        # The supervisor runs the embedded Postgres as its own child, and the API client needs
        # no database: settings must not start one.
        os.environ.setdefault("EMBEDDED_DB_SUPERVISED", "1")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
