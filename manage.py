#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys

from django.core import management

from config import embedded_db

# Commands that never connect to the database, and run_service, whose supervisor runs the
# embedded Postgres as its own child: every other command finds it started (DATABASE_URL unset).
NEEDS_NO_DATABASE = frozenset({
    "check", "collectstatic", "compilemessages", "convert_wan_checkpoint", "create_tiny_checkpoint",
    "diffsettings", "findstatic", "makemessages", "run_service", "spectacular", "startapp", "startproject",
    "submit_video",
})


class ManagementUtility(management.ManagementUtility):
    """Django's, which starts the embedded Postgres (if the settings name one) for the command
    it runs: after --settings is applied and the apps are loaded, not for `help COMMAND`."""

    def fetch_command(self, subcommand: str):
        command = super().fetch_command(subcommand)
        if self.argv[1:2] == [subcommand] and subcommand not in NEEDS_NO_DATABASE:
            embedded_db.start_if_configured()
        return command


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    ManagementUtility(sys.argv).execute()


if __name__ == "__main__":
    main()
