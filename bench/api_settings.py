"""The service's settings with one extra route for bench/api_load.py: a bare Django JSON view,
served by the same gunicorn, middleware and database as the API it is compared with."""
from config.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.api_urls"
