"""The /v1 endpoints: videos (create, retrieve, list, delete, content, remix) and models.

Each view validates with a serializer, calls one service or selector, and shapes the output;
errors leave as everywhere else and are put in OpenAI's shape by errors.OpenAIErrorShapeMiddleware.
"""
from __future__ import annotations

import logging
from pathlib import Path

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers as drf_serializers
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videojobs import previews, selectors, services
from videojobs.api.auth import owner_of
from videojobs.api.jobs import submit_validated
from videojobs.api.openai import mapping
from videojobs.api.openai import serializers as S
from videojobs.api.openai.auth import OpenAIBearerAuthentication
from videojobs.api.parsers import GuardedJSONParser
from videojobs.api.ranges import ranged_file_response
from videojobs.api.serializers import SubmitSerializer, validate_idempotency_key
from videojobs.errors import ErrorCode, JobNotFound, JobRefused
from videojobs.models import UNFINISHED_STATUSES, JobStatus, VideoJob
from videojobs.selectors import openai_videos as V

logger = logging.getLogger("videojobs.api")
TAG = "OpenAI-compatible"
NOT_FOUND = {404: OpenApiResponse(S.OpenAIErrorSerializer, description="no such video (or another owner's, or deleted)")}
ID_PARAMETER = OpenApiParameter("video_id", str, OpenApiParameter.PATH,
                                description="video_<requestId>, or the bare requestId of /video/submit")


class AnyAccept(BaseContentNegotiation):
    """Errors in JSON whatever the Accept header: download_content sends Accept: application/binary."""

    def select_parser(self, request, parsers):
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class OpenAIView(APIView):
    authentication_classes = [OpenAIBearerAuthentication]
    content_negotiation_class = AnyAccept


def _job(request: Request, video_id: str) -> VideoJob:
    try:
        return selectors.get_job(request_id=video_id, owner=owner_of(request))
    except VideoJob.DoesNotExist:
        raise JobNotFound(video_id) from None


class VideosView(OpenAIView):
    parser_classes = [GuardedJSONParser, MultiPartParser]

    @extend_schema(
        tags=[TAG], operation_id="v1_videos_create", summary="Create a video (openai: client.videos.create)",
        request={"multipart/form-data": S.VideoCreateFormSerializer, "application/json": S.VideoCreateJSONSerializer},
        responses={200: S.VideoSerializer, 400: S.OpenAIErrorSerializer,
                   429: OpenApiResponse(S.OpenAIErrorSerializer, description="the queue or your share is full (Retry-After)")},
        description="The image-to-video job of /video/submit in OpenAI's form. Any field of /video/submit "
        "(negative_prompt, num_frames, guidance_scale, infer_steps, seed, sample_solver, sample_shift, the cache "
        "switches, webhook_url, ...) may be sent beside OpenAI's (the SDK's extra_body), with the same rules.",
    )
    def post(self, request: Request) -> Response:
        idempotency_key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
        multipart = "multipart" in (request.content_type or "")
        body, origin = mapping.submit_data(data=request.data, files=request.FILES, multipart=multipart)
        serializer = SubmitSerializer(data=body, context={"multipart": multipart})
        if not serializer.is_valid():
            raise drf_serializers.ValidationError(mapping.renamed_errors(serializer.errors, origin))
        job = submit_validated(data=dict(serializer.validated_data), owner=owner_of(request),
                               idempotency_key=idempotency_key)
        return Response(V.video_object(job=job))

    @extend_schema(tags=[TAG], operation_id="v1_videos_list", parameters=[S.VideoListQuerySerializer],
                   responses={200: S.VideoListSerializer, 400: S.OpenAIErrorSerializer},
                   summary="The caller's videos, by creation time, cursor-paged (openai: client.videos.list)")
    def get(self, request: Request) -> Response:
        query = S.VideoListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        owner, after = owner_of(request), None
        if "after" in query.validated_data:
            after = V.cursor_job(video=query.validated_data["after"], owner=owner)
            if after is None:
                raise drf_serializers.ValidationError({"after": ["no such video"]})
        return Response(V.video_page(owner=owner, limit=query.validated_data["limit"],
                                     order=query.validated_data["order"], after=after))


class VideoView(OpenAIView):
    @extend_schema(tags=[TAG], operation_id="v1_videos_retrieve", parameters=[ID_PARAMETER],
                   responses={200: S.VideoSerializer, **NOT_FOUND}, summary="A video (openai: client.videos.retrieve)")
    def get(self, request: Request, video_id: str) -> Response:
        job = _job(request, video_id)
        poll_after = V.poll_after_ms(job=job)
        headers = {"openai-poll-after-ms": str(poll_after)} if poll_after is not None else None
        return Response(V.video_object(job=job), headers=headers)

    @extend_schema(tags=[TAG], operation_id="v1_videos_delete", parameters=[ID_PARAMETER],
                   responses={200: S.VideoDeletedSerializer, **NOT_FOUND},
                   summary="Delete a video: cancel it if unfinished, remove its files; later reads answer 404")
    def delete(self, request: Request, video_id: str) -> Response:
        job = services.delete_job(request_id=video_id, owner=owner_of(request))
        return Response({"id": V.video_id(job.request_id), "object": "video.deleted", "deleted": True})


class VideoContentView(OpenAIView):
    @extend_schema(
        tags=[TAG], operation_id="v1_videos_content", parameters=[ID_PARAMETER, S.VideoContentQuerySerializer],
        responses={200: OpenApiResponse(description="video/mp4 (Range requests: 206), image/webp or image/jpeg"),
                   206: OpenApiResponse(description="a byte range of the mp4"),
                   409: OpenApiResponse(S.OpenAIErrorSerializer, description="not completed (yet, or ever), or a "
                                        "preview of a video that cannot be decoded"),
                   410: OpenApiResponse(S.OpenAIErrorSerializer, description="the video expired"),
                   416: OpenApiResponse(description="the Range cannot be satisfied"), **NOT_FOUND},
        summary="Download a video, its thumbnail or its sprite sheet (openai: client.videos.download_content)",
    )
    def get(self, request: Request, video_id: str):
        query = S.VideoContentQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        job = _job(request, video_id)
        video = _video_file(job)
        variant = query.validated_data["variant"]
        name = V.video_id(job.request_id)
        if variant == "video":
            return ranged_file_response(range_header=request.headers.get("Range"), path=video,
                                        content_type="video/mp4", filename=f"{name}.mp4")
        try:
            preview = previews.make_preview(video, variant)
        except FileNotFoundError:
            raise _expired(job, "the video file is gone") from None
        except ValueError as exc:
            logger.warning("no %s for video %s: %s", variant, job.request_id, exc)
            raise JobRefused(f"video {name} has no {variant}: its mp4 could not be decoded", code=ErrorCode.NO_VIDEO,
                             status=409) from None
        return ranged_file_response(range_header=None, path=preview, content_type=previews.VARIANTS[variant].content_type,
                                    filename=f"{name}.{previews.VARIANTS[variant].suffix}")


def _video_file(job: VideoJob) -> Path:
    """The completed job's mp4, or the refusal that says why there is none."""
    if job.status in UNFINISHED_STATUSES:
        raise JobRefused(f"video {V.video_id(job.request_id)} is {V.video_object(job=job)['status']}; its content "
                         "can be downloaded once its status is completed", code=ErrorCode.NOT_FINISHED, status=409)
    if job.status != JobStatus.SUCCEED:
        raise JobRefused(f"video {V.video_id(job.request_id)} failed ({job.reason or job.status}); it has no content",
                         code=ErrorCode.NO_VIDEO, status=409)
    path = selectors.video_path(job=job)
    if not selectors.has_video(job=job) or not path.is_file():
        raise _expired(job, selectors.expired_video_reason(job=job) or "the video file is gone")
    return path


def _expired(job: VideoJob, reason: str) -> JobRefused:
    return JobRefused(f"video {V.video_id(job.request_id)} expired: {reason}", code=ErrorCode.GONE, status=410)


class VideoRemixView(OpenAIView):
    @extend_schema(tags=[TAG], operation_id="v1_videos_remix", parameters=[ID_PARAMETER], request=S.VideoRemixSerializer,
                   responses={200: S.VideoSerializer, 400: S.OpenAIErrorSerializer, **NOT_FOUND},
                   summary="A new video from a video's image and parameters with a new prompt (openai: client.videos.remix)")
    def post(self, request: Request, video_id: str) -> Response:
        body = S.VideoRemixSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = services.remix_job(request_id=video_id, owner=owner_of(request), prompt=body.validated_data["prompt"])
        return Response(V.video_object(job=job))


class ModelsView(OpenAIView):
    @extend_schema(tags=[TAG], operation_id="v1_models_list", responses={200: S.ModelListSerializer},
                   summary="The served model (openai: client.models.list)")
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": V.served_models()})


class ModelView(OpenAIView):
    @extend_schema(tags=[TAG], operation_id="v1_models_retrieve", responses={200: S.ModelSerializer, 404: S.OpenAIErrorSerializer},
                   summary="One served model (openai: client.models.retrieve)")
    def get(self, request: Request, model_id: str) -> Response:
        for model in V.served_models():
            if model["id"] == model_id:
                return Response(model)
        raise JobRefused(f"no model {model_id!r}; this server serves {', '.join(m['id'] for m in V.served_models())}",
                         code=ErrorCode.NOT_FOUND, status=404)
