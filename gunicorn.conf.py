"""gunicorn reads this file from its working directory (the project root, under `make run` and
the systemd unit alike), so the command line stays config.service.web_command's. It only
makes gunicorn's own lines (start-up, workers, the access log) follow LOG_FORMAT: with json
they are JSON objects like every other line of the service."""
from config import env
from config.logging import LOG_FORMATS, gunicorn_logconfig

logconfig_dict = gunicorn_logconfig(env.choice("LOG_FORMAT", "plain", LOG_FORMATS))
