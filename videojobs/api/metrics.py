"""/metrics: the original's JSON, or the Prometheus text format (videojobs.api.prometheus)."""
from __future__ import annotations

import time

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videojobs import selectors
from videojobs.api import prometheus
from videojobs.api.health import STARTED_AT, is_operator, service_block


class MetricsView(APIView):
    permission_classes = [AllowAny]  # scrapers carry no key; private fields need an operator session

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # A scraper's "Accept: text/plain" matches no DRF renderer (406): get() serves it itself.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        responses={200: dict},
        summary="Metrics as JSON (original shape), or Prometheus text with ?format=prometheus or Accept: text/plain",
    )
    def get(self, request: Request) -> Response | HttpResponse:
        wants_text = request.query_params.get("format") == "prometheus" or "text/plain" in request.headers.get(
            "Accept", ""
        )
        if wants_text:
            text = prometheus.render(private=is_operator(request), started_at=STARTED_AT)
            return HttpResponse(text, content_type=prometheus.CONTENT_TYPE)
        now = time.time()
        block = service_block(private=is_operator(request))
        body = {
            "timestamp": round(now, 3),
            **block,
            "config": {
                "model": selectors.running_topology(workers=block["workers"]["workers"]),
                "business": {
                    "max_concurrent_tasks": settings.MAX_CONCURRENT_TASKS,
                    "task_timeout": settings.TASK_TIMEOUT,
                },
            },
            "system": {"rank": 0, "world_size": block["service"]["pipeline_world_size"], "uptime": round(now - STARTED_AT, 1)},
            "acceleration": selectors.acceleration_stats(),
            "jobs_by_lora": selectors.jobs_by_lora(),
        }
        return Response(body)
