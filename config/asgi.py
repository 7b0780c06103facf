import os

from django.core.asgi import get_asgi_application

from config import embedded_db

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()
# Run standalone with DATABASE_URL unset, the server starts the embedded Postgres it serves from.
embedded_db.start_if_configured()
