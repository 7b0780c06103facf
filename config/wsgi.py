import os

from django.core.wsgi import get_wsgi_application

from config import embedded_db

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
# Run standalone with DATABASE_URL unset, the server starts the embedded Postgres it serves from
# (one per data folder, whatever the number of workers); under `make run` this does nothing.
embedded_db.start_if_configured()
