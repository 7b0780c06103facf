"""GET /videos/<requestId>.mp4: a finished job's video, for its owner (410 once deleted)."""
from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videojobs import selectors
from videojobs.api.auth import owner_of
from videojobs.api.serializers import ErrorSerializer
from videojobs.errors import ErrorCode, JobNotFound, error_body
from videojobs.models import VideoJob


class VideoFileView(APIView):
    @extend_schema(responses={200: OpenApiResponse(description="video/mp4"), 404: ErrorSerializer, 410: ErrorSerializer},
                   summary="Download a job's video (410 once the disk quota deleted it)")
    def get(self, request: Request, request_id: str):
        """GET /videos/<requestId>.mp4 (the file a finished job of this caller wrote)."""
        owner = owner_of(request)
        try:
            job = selectors.get_job(request_id=request_id, owner=owner)
        except VideoJob.DoesNotExist:
            raise JobNotFound(request_id) from None
        path = selectors.video_path(job=job)  # the URL may name it video_<requestId>
        if not path.is_file():
            reason = selectors.expired_video_reason(job=job)
            if reason is not None:
                return Response(error_body(ErrorCode.GONE, reason), status=status.HTTP_410_GONE)
            return Response(error_body(ErrorCode.NOT_FOUND, "the job has no video"), status=404)
        return FileResponse(path.open("rb"), content_type="video/mp4", filename=path.name)
