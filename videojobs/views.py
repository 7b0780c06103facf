"""HTTP endpoints: validate with a serializer, call one service or selector, shape the output."""
from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.http import FileResponse, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videojobs import selectors, services
from videojobs.api_errors import error_body
from videojobs.auth import owner_of
from videojobs.models import VideoJob
from videojobs.serializers import (
    CancelResponseSerializer,
    ErrorSerializer,
    RequestIdSerializer,
    StatusResponseSerializer,
    SubmitResponseSerializer,
    SubmitSerializer,
    validate_idempotency_key,
)

STARTED_AT = time.time()
_NOT_FOUND = {404: OpenApiResponse(ErrorSerializer, description="unknown requestId")}


def _not_found(request_id: str) -> Response:
    return Response(error_body("NOT_FOUND", f"no job with requestId {request_id!r}"), status=404)


class SubmitView(APIView):
    @extend_schema(
        request=SubmitSerializer,
        responses={
            202: SubmitResponseSerializer,
            400: ErrorSerializer,
            429: OpenApiResponse(ErrorSerializer, description="MAX_CONCURRENT_TASKS jobs are unfinished"),
        },
        summary="Submit an image-to-video job",
    )
    def post(self, request: Request) -> Response:
        idempotency_key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
        serializer = SubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        prompt = data.pop("prompt")
        image_url = data.pop("image_url")
        negative_prompt = data.pop("negative_prompt") or ""
        try:
            job, _ = services.submit_job(
                prompt=prompt,
                image_url=image_url,
                negative_prompt=negative_prompt,
                params=data,
                owner=owner_of(request),
                idempotency_key=idempotency_key,
            )
        except services.IdempotencyConflict as conflict:
            return Response(error_body("IDEMPOTENCY_CONFLICT", str(conflict)), status=status.HTTP_409_CONFLICT)
        except services.OwnerLimit as limit:
            response = Response(error_body("OWNER_LIMIT", str(limit)), status=status.HTTP_429_TOO_MANY_REQUESTS)
            response["Retry-After"] = str(limit.retry_after)
            return response
        except services.QueueFull as full:
            response = Response(
                error_body(
                    "QUEUE_FULL",
                    f"the server is busy ({full.unfinished} unfinished jobs, limit {full.limit}); retry later",
                    detail="服务器繁忙，请稍后重试",
                ),
                status=status.HTTP_429_TOO_MANY_REQUESTS,
            )
            response["Retry-After"] = str(settings.RETRY_AFTER_SECONDS)
            return response
        return Response({"requestId": job.request_id}, status=status.HTTP_202_ACCEPTED)


class StatusView(APIView):
    @extend_schema(request=RequestIdSerializer, responses={200: StatusResponseSerializer, **_NOT_FOUND}, summary="Job status")
    def post(self, request: Request) -> Response:
        serializer = RequestIdSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        request_id = serializer.validated_data["requestId"]
        try:
            job = selectors.get_job_for_status(request_id=request_id, owner=owner_of(request))
        except VideoJob.DoesNotExist:
            return _not_found(request_id)
        return Response(selectors.status_document(job=job))


class CancelView(APIView):
    @extend_schema(
        request=RequestIdSerializer,
        responses={200: CancelResponseSerializer, 409: ErrorSerializer, **_NOT_FOUND},
        summary="Cancel a job",
        description="A queued job is cancelled at once; a running job stops at its next denoising step "
        "on every rank (job_status stays InProgress until then).",
    )
    def post(self, request: Request) -> Response:
        serializer = RequestIdSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        request_id = serializer.validated_data["requestId"]
        try:
            owner = owner_of(request)
            selectors.get_job(request_id=request_id, owner=owner)
            job = services.request_cancel(request_id=request_id, owner=owner)
        except VideoJob.DoesNotExist:
            return _not_found(request_id)
        except services.JobAlreadyFinished as finished:
            return Response(
                error_body("ALREADY_FINISHED", f"the job already ended as {finished.job.status}"), status=409
            )
        message = "cancelled" if job.status == "Cancelled" else "cancel requested; the job stops at its next step"
        return Response(
            {"status": "Cancelled", "requestId": job.request_id, "job_status": job.status, "message": message}
        )


def is_operator(request: Request) -> bool:
    """A logged-in staff user (the admin's session): sees hosts, pids and model paths. Read from
    the session itself: DRF replaces request.user with its own (API) authentication's result."""
    from django.contrib.auth import get_user

    user = get_user(request._request)
    return bool(user.is_authenticated and user.is_staff)


def _service_block(*, private: bool) -> dict:
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
            block = _service_block(private=is_operator(request))
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


class MetricsView(APIView):
    permission_classes = [AllowAny]  # scrapers carry no key; private fields need an operator session
    @extend_schema(
        responses={200: dict},
        summary="Metrics as JSON (original shape), or Prometheus text with ?format=prometheus",
    )
    def get(self, request: Request) -> Response | HttpResponse:
        now = time.time()
        block = _service_block(private=is_operator(request))
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
        }
        wants_text = request.query_params.get("format") == "prometheus" or "text/plain" in request.headers.get(
            "Accept", ""
        )
        if wants_text:
            return HttpResponse(_prometheus(body), content_type="text/plain; version=0.0.4")
        return Response(body)


def _prometheus(body: dict) -> str:
    lines = [
        "# HELP videogen_jobs Jobs by status.",
        "# TYPE videogen_jobs gauge",
        *(f'videogen_jobs{{status="{s}"}} {n}' for s, n in body["jobs"].items()),
        "# HELP videogen_queue_slots_available Submissions still admitted before 429.",
        "# TYPE videogen_queue_slots_available gauge",
        f"videogen_queue_slots_available {body['resources']['available_slots']}",
        "# HELP videogen_workers_ready Inference daemons idle or busy with a fresh heartbeat.",
        "# TYPE videogen_workers_ready gauge",
        f"videogen_workers_ready {body['workers']['ready']}",
        "# HELP videogen_jobs_by_cache_method Succeeded jobs by the step cache they ran with.",
        "# TYPE videogen_jobs_by_cache_method counter",
        *(f'videogen_jobs_by_cache_method{{method="{m}"}} {n}' for m, n in body["acceleration"]["jobs_by_cache_method"].items()),
        "# HELP videogen_jobs_by_attention_backend Succeeded jobs by the DiT's attention backend.",
        "# TYPE videogen_jobs_by_attention_backend counter",
        *(f'videogen_jobs_by_attention_backend{{backend="{b}"}} {n}'
          for b, n in body["acceleration"]["jobs_by_attention_backend"].items()),
        "# HELP videogen_attention_outputs_reused Block self-attention outputs the attention cache reused.",
        "# TYPE videogen_attention_outputs_reused counter",
        *(f'videogen_attention_outputs_reused{{pass="{p}"}} {n}'
          for p, n in body["acceleration"]["attention_outputs_reused"].items()),
        "# HELP videogen_blocks_skipped Transformer block computations the adaptive cache skipped.",
        "# TYPE videogen_blocks_skipped counter",
        *(f'videogen_blocks_skipped{{pass="{p}"}} {n}' for p, n in body["acceleration"]["blocks_skipped"].items()),
        "# HELP videogen_prompt_cache_hits Prompt embeddings served without the text encoder.",
        "# TYPE videogen_prompt_cache_hits counter",
        f"videogen_prompt_cache_hits {body['acceleration']['prompt_cache_hits']}",
        "# HELP videogen_uptime_seconds Web process uptime.",
        "# TYPE videogen_uptime_seconds counter",
        f"videogen_uptime_seconds {body['system']['uptime']}",
    ]
    return "\n".join(lines) + "\n"


class VideoFileView(APIView):
    @extend_schema(responses={200: OpenApiResponse(description="video/mp4"), 404: ErrorSerializer, 410: ErrorSerializer},
                   summary="Download a job's video (410 once the disk quota deleted it)")
    def get(self, request: Request, request_id: str):
        """GET /videos/<requestId>.mp4 (the file a finished job of this caller wrote)."""
        owner = owner_of(request)
        try:
            selectors.get_job(request_id=request_id, owner=owner)
        except VideoJob.DoesNotExist:
            return _not_found(request_id)
        path = Path(settings.OUTPUT_DIR) / f"{request_id}.mp4"
        if not path.is_file():
            reason = selectors.expired_video_reason(request_id=request_id, owner=owner)
            if reason is not None:
                return Response(error_body("GONE", reason), status=status.HTTP_410_GONE)
            return Response(error_body("NOT_FOUND", "the job has no video"), status=404)
        return FileResponse(path.open("rb"), content_type="video/mp4", filename=path.name)
