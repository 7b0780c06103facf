"""Readiness (/health) and the service block that /health and /metrics share."""
from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import get_user
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videojobs import selectors

STARTED_AT = time.time()


def is_operator(request: Request) -> bool:
    """A logged-in staff user (the admin's session): sees hosts, pids and model paths. Read from
    the session itself: DRF replaces request.user with its own (API) authentication's result."""
    user = get_user(request._request)
    return bool(user.is_authenticated and user.is_staff)


def service_block(*, private: bool) -> dict:
    unfinished = selectors.unfinished_count()
    workers = selectors.worker_summary(private=private)
    world = max((w["world_size"] for w in workers["workers"]), default=0)
    counts = selectors.status_counts()
    return {
        "service": {"total_tasks": sum(counts.values()), "pipeline_world_size": world, "pipeline_rank": 0},
        "resources": {
            "concurrent_tasks": unfinished,
            "max_concurrent": settings.MAX_CONCURRENT_TASKS,
            "available_slots": max(settings.MAX_CONCURRENT_TASKS - unfinished, 0),
        },
        "jobs": counts,
        "workers": workers,
    }


class HealthView(APIView):
    permission_classes = [AllowAny]  # load balancers probe without a key
    @extend_schema(responses={200: dict, 503: dict}, summary="Readiness: 503 when no inference worker is ready")
    def get(self, request: Request) -> Response:
        now = time.time()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            block = service_block(private=is_operator(request))
        except Exception:  # noqa: BLE001 - any database failure makes the service unhealthy
            response = Response(
                {"status": "unhealthy", "reason": "database unreachable (restarting or down)", "timestamp": now},
                status=503,
            )
            response["Retry-After"] = "5"
            return response
        ready = block["workers"]["ready"]
        body = {
            "status": "healthy" if ready else "unhealthy",
            "reason": None if ready else "no inference worker is ready (none registered, loading, or stale)",
            "timestamp": round(now, 3),
            "uptime": round(now - STARTED_AT, 1),
            "rank": 0,
            "world_size": block["service"]["pipeline_world_size"],
            "config": {
                **selectors.running_topology(workers=block["workers"]["workers"]),
                "max_concurrent": settings.MAX_CONCURRENT_TASKS,
                "task_timeout": settings.TASK_TIMEOUT,
            },
            **block,
        }
        return Response(body, status=200 if ready else 503)
