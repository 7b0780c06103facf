"""HTTP endpoints: validate with a serializer, call one service or selector, shape the output."""
from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.http import FileResponse, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videojobs import metrics, selectors, services
from videojobs.api_errors import error_body
from videojobs.auth import owner_of
from videojobs.image_input import ImageInputError
from videojobs.models import VideoJob
from videojobs.parsers import GuardedJSONParser
from videojobs.serializers import (
    CancelResponseSerializer,
    ErrorSerializer,
    JobListQuerySerializer,
    JobListSerializer,
    RequestIdSerializer,
    StatusResponseSerializer,
    SubmitResponseSerializer,
    SubmitSerializer,
    form_data,
    validate_idempotency_key,
)
from videojobs.webhooks import WebhookURLError

STARTED_AT = time.time()
_NOT_FOUND = {404: OpenApiResponse(ErrorSerializer, description="unknown requestId")}


def _not_found(request_id: str) -> Response:
    return Response(error_body("NOT_FOUND", f"no job with requestId {request_id!r}"), status=404)


class SubmitView(APIView):
    parser_classes = [GuardedJSONParser, MultiPartParser]

    @extend_schema(
        request={"application/json": SubmitSerializer, "multipart/form-data": SubmitSerializer},
        responses={
            202: SubmitResponseSerializer,
            400: ErrorSerializer,
            429: OpenApiResponse(ErrorSerializer, description="MAX_CONCURRENT_TASKS jobs are unfinished"),
        },
        summary="Submit an image-to-video job",
        description="JSON with an image_url the server fetches, or multipart/form-data with the image file in "
        "`image` and the other fields as form fields (the same size, format and pixel limits apply to both).",
    )
    def post(self, request: Request) -> Response:
        idempotency_key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
        multipart = "multipart" in (request.content_type or "")
        serializer = SubmitSerializer(data=form_data(request.data, request.FILES) if multipart else request.data,
                                      context={"multipart": multipart})
        serializer.is_valid(raise_exception=True)
        try:
            job = submit_validated(data=dict(serializer.validated_data), owner=owner_of(request),
                                   idempotency_key=idempotency_key)
        except services.IdempotencyConflict as conflict:
            return Response(error_body("IDEMPOTENCY_CONFLICT", str(conflict)), status=status.HTTP_409_CONFLICT)
        except services.WebhooksDisabled as disabled:
            return Response(error_body("WEBHOOKS_DISABLED", str(disabled)), status=status.HTTP_400_BAD_REQUEST)
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


def submit_validated(*, data: dict, owner: str, idempotency_key: str | None) -> VideoJob:
    """SubmitSerializer's output into services.submit_job (the API and the job page both call it).

    An unusable upload or webhook_url raises a ValidationError on its field; the service's
    admission errors pass through."""
    upload = data.pop("image", None)
    fields = {name: data.pop(name, None) for name in ("prompt", "image_url", "negative_prompt", "webhook_url",
                                                      "webhook_events")}
    try:
        job, _ = services.submit_job(
            prompt=fields["prompt"], image_url=fields["image_url"] or "",
            image_bytes=upload.read() if upload is not None else None,
            negative_prompt=fields["negative_prompt"] or "", params=data, owner=owner,
            idempotency_key=idempotency_key, webhook_url=fields["webhook_url"] or "",
            webhook_events=fields["webhook_events"],
        )
    except ImageInputError as bad:
        raise drf_serializers.ValidationError({"image": [bad.reason]}) from None
    except WebhookURLError as bad:
        raise drf_serializers.ValidationError({"webhook_url": [str(bad)]}) from None
    return job


class StatusView(APIView):
    @extend_schema(request=RequestIdSerializer, responses={200: StatusResponseSerializer, **_NOT_FOUND}, summary="Job status")
    def post(self, request: Request) -> Response:
        serializer = RequestIdSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _status_response(request, serializer.validated_data["requestId"])


def _status_response(request: Request, request_id: str) -> Response:
    try:
        job = selectors.get_job_for_status(request_id=request_id, owner=owner_of(request))
    except VideoJob.DoesNotExist:
        return _not_found(request_id)
    return Response(selectors.status_document(job=job))


class JobView(APIView):
    @extend_schema(responses={200: StatusResponseSerializer, **_NOT_FOUND}, summary="Job status (GET)",
                   description="The status document of POST /video/status, by URL.")
    def get(self, request: Request, request_id: str) -> Response:
        return _status_response(request, request_id)


class JobListView(APIView):
    @extend_schema(parameters=[JobListQuerySerializer], responses={200: JobListSerializer},
                   summary="The caller's jobs, newest first, paged and filtered by status")
    def get(self, request: Request) -> Response:
        query = JobListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page, size = query.validated_data["page"], query.validated_data["page_size"]
        jobs = selectors.list_jobs(owner=owner_of(request), status=query.validated_data.get("status"))
        count = jobs.count()
        rows = jobs[(page - 1) * size: page * size]
        return Response({
            "count": count, "page": page, "page_size": size,
            "next_page": page + 1 if page * size < count else None,
            "results": [selectors.job_summary(job=job) for job in rows],
        })


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
            text = metrics.render(private=is_operator(request), started_at=STARTED_AT)
            return HttpResponse(text, content_type=metrics.CONTENT_TYPE)
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
        return Response(body)


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
