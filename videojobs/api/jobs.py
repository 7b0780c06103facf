"""The job endpoints: submit, status (POST and GET), the caller's list, cancel.

Each view validates with a serializer, calls one service or selector, and shapes the output;
a refusal (videojobs.errors.JobRefused) goes to the API's exception handler.
"""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videojobs import selectors, services
from videojobs.api.auth import owner_of
from videojobs.api.parsers import GuardedJSONParser
from videojobs.api.serializers import (
    CancelResponseSerializer,
    ErrorSerializer,
    JobListQuerySerializer,
    JobListSerializer,
    RequestIdSerializer,
    StatusResponseSerializer,
    SubmitJSONSerializer,
    SubmitResponseSerializer,
    SubmitSerializer,
    form_data,
    validate_idempotency_key,
)
from videojobs.errors import JobNotFound
from videojobs.models import VideoJob

NOT_FOUND_RESPONSE = {404: OpenApiResponse(ErrorSerializer, description="unknown requestId")}


class SubmitView(APIView):
    parser_classes = [GuardedJSONParser, MultiPartParser]

    @extend_schema(
        request={"application/json": SubmitJSONSerializer, "multipart/form-data": SubmitSerializer},
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
        job = submit_validated(data=dict(serializer.validated_data), owner=owner_of(request),
                               idempotency_key=idempotency_key)
        return Response({"requestId": job.request_id}, status=status.HTTP_202_ACCEPTED)


def submit_validated(*, data: dict, owner: str, idempotency_key: str | None) -> VideoJob:
    """SubmitSerializer's output into services.submit_job (the API and the job page both call it).

    The service's refusals pass through (an unusable upload or webhook_url names its field)."""
    upload = data.pop("image", None)
    fields = {name: data.pop(name, None) for name in ("prompt", "image_url", "negative_prompt", "webhook_url",
                                                      "webhook_events")}
    job, _ = services.submit_job(
        prompt=fields["prompt"], image_url=fields["image_url"] or "",
        image_bytes=upload.read() if upload is not None else None,
        negative_prompt=fields["negative_prompt"] or "", params=data, owner=owner,
        idempotency_key=idempotency_key, webhook_url=fields["webhook_url"] or "",
        webhook_events=fields["webhook_events"],
    )
    return job


class StatusView(APIView):
    @extend_schema(request=RequestIdSerializer, responses={200: StatusResponseSerializer, **NOT_FOUND_RESPONSE}, summary="Job status")
    def post(self, request: Request) -> Response:
        serializer = RequestIdSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _status_response(request, serializer.validated_data["requestId"])


def _status_response(request: Request, request_id: str) -> Response:
    try:
        job = selectors.get_job_for_status(request_id=request_id, owner=owner_of(request))
    except VideoJob.DoesNotExist:
        raise JobNotFound(request_id) from None
    return Response(selectors.status_document(job=job))


class JobView(APIView):
    @extend_schema(responses={200: StatusResponseSerializer, **NOT_FOUND_RESPONSE}, summary="Job status (GET)",
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
        responses={200: CancelResponseSerializer, 409: ErrorSerializer, **NOT_FOUND_RESPONSE},
        summary="Cancel a job",
        description="A queued job is cancelled at once; a running job stops at its next denoising step "
        "on every rank (job_status stays InProgress until then).",
    )
    def post(self, request: Request) -> Response:
        serializer = RequestIdSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        request_id = serializer.validated_data["requestId"]
        # The service looks the job up for this owner: an unknown, malformed or another's id is JobNotFound.
        job = services.request_cancel(request_id=request_id, owner=owner_of(request))
        message = "cancelled" if job.status == "Cancelled" else "cancel requested; the job stops at its next step"
        return Response(
            {"status": "Cancelled", "requestId": job.request_id, "job_status": job.status, "message": message}
        )
