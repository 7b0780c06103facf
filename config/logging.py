"""Console log formats (LOG_FORMAT) and the filter that keeps load-balancer probes out of the
error log. Used by settings.LOGGING in every process, and by gunicorn.conf.py for gunicorn's
own lines.
"""
from __future__ import annotations

import logging
import logging.config
from datetime import datetime, timezone
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

# Attributes a record may carry through ``extra=``: the job events' context, and the status
# code Django's request and server loggers attach. Anything else (the request object, say)
# stays out of the line.
EXTRA_FIELDS = (
    "event", "request_id", "worker", "status", "phase", "step", "total_steps", "error_code", "attempt",
    "owner", "duration_s", "status_code",
)
# What the plain format appends, so a job's lines can be grepped in either format.
PLAIN_CONTEXT = ("request_id", "worker")

HEALTH_PATH = "/health"
LOG_FORMATS = ("plain", "json")


def _utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="milliseconds")


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the extras of
    EXTRA_FIELDS a record carries, and exc_info/stack_info as strings. python-json-logger does
    the message, the traceback and the encoding of values JSON cannot hold (datetimes, UUIDs)."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = _utc_iso(record.created)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        for field in EXTRA_FIELDS:
            if field in record.__dict__:
                log_data[field] = record.__dict__[field]
        # exc_info and stack_info, already formatted by the library.
        log_data.update(message_dict)


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger message [request_id=… worker=…]``, the bracket only when the record
    carries one of them; a traceback still follows on the next lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        context = [f"{key}={record.__dict__[key]}" for key in PLAIN_CONTEXT if record.__dict__.get(key) not in (None, "")]
        return f"{line} [{' '.join(context)}]" if context else line


class HealthProbeUnavailableFilter(logging.Filter):
    """For ``django.request``: drop the error Django logs for every 503 of /health. A 503 there
    is the readiness answer while the daemon loads its model (minutes of probes), not a fault;
    the access log still shows each probe. Every other 5xx is logged as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        is_probe = getattr(request, "path_info", None) == HEALTH_PATH
        return not (is_probe and getattr(record, "status_code", None) == 503)


def configure(logging_settings: dict[str, Any]) -> None:
    """settings.LOGGING_CONFIG: Django's dictConfig, and Python's warnings through logging
    (``py.warnings``), so that a warning is one line in the chosen format too, not two raw
    lines on stderr."""
    logging.config.dictConfig(logging_settings)
    logging.captureWarnings(True)


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its start-up, worker and access lines in the same JSON
    as Django's when LOG_FORMAT=json; empty (gunicorn's own format) for plain."""
    if log_format != "json":
        return {}
    return {
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        "formatters": {"generic": {"()": "config.logging.JsonFormatter"}},
    }
