from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run web + django-q2 cluster + inference daemon in the foreground (Ctrl-C stops them all)."

    def handle(self, *args, **options):
        from config.service import run

        raise SystemExit(run())
