from django.core.management.base import BaseCommand

from config.service import run


class Command(BaseCommand):
    help = "Run web + django-q2 cluster + inference daemon in the foreground (Ctrl-C stops them all)."

    def handle(self, *args, **options):
        raise SystemExit(run())
