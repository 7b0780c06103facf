"""The API's one exception handler, the error views Django calls outside DRF, and the guards
every request passes (the body size limit, no NUL byte in the URL): every error is
{"error": CODE, "message": text} with a code from videojobs.errors.

A service's refusal (videojobs.errors.JobRefused) is answered by errors.refusal_payload, as the
job page and the admin answer it. Never a traceback or a server path: unexpected exceptions are
logged with a reference that the response repeats, so an operator can find the log line.
"""
from __future__ import annotations

import io
import logging
import sys
import uuid

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from videojobs.api.parsers import PayloadTooLarge
from videojobs.errors import ErrorCode, JobRefused, error_body, refusal_payload

logger = logging.getLogger("videojobs.api")


def flatten_errors(detail, prefix: str = "") -> list[str]:
    """{"num_frames": ["must be ..."]} -> ["num_frames: must be ..."]."""
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            out.extend(flatten_errors(value, name))
        return out
    if isinstance(detail, list):
        return [m for item in detail for m in flatten_errors(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


_CODE_OF_STATUS = {403: ErrorCode.PERMISSION_DENIED, 404: ErrorCode.NOT_FOUND}
DATABASE_DOWN_MESSAGE = "the database is unreachable for the moment; retry shortly"


def database_unavailable() -> JsonResponse:
    """503 while Postgres is down or restarting: a client should retry, nothing is lost."""
    response = JsonResponse(error_body(ErrorCode.DATABASE_UNAVAILABLE, DATABASE_DOWN_MESSAGE), status=503)
    response["Retry-After"] = str(min(settings.RETRY_AFTER_SECONDS, 5))
    return response


def refused_request(exc: SuspiciousOperation) -> tuple[int, dict]:
    """(status, body) for Django's refusal of a request's shape (the SuspiciousOperation family,
    raised while the body is read): 413 for form fields over DATA_UPLOAD_MAX_MEMORY_SIZE in all
    (an uploaded file aside), 400 for too many fields or files and the rest. The API's handler
    and handler400 (the job page, the admin) both answer with it."""
    if isinstance(exc, RequestDataTooBig):
        return 413, error_body(ErrorCode.PAYLOAD_TOO_LARGE, "the request's fields are over "
                               f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes in all (an uploaded file aside)")
    if isinstance(exc, TooManyFieldsSent):
        return 400, error_body(ErrorCode.BAD_REQUEST,
                               f"the request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields")
    if isinstance(exc, TooManyFilesSent):
        return 400, error_body(ErrorCode.BAD_REQUEST,
                               f"the request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files")
    return 400, error_body(ErrorCode.BAD_REQUEST, "the request was refused as malformed")


def exception_handler(exc, context):
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.warning("database unreachable: %s", exc)
        return database_unavailable()
    if isinstance(exc, SuspiciousOperation):
        # Django logs these itself (django.security.*) where they leave a view; a DRF view
        # answers them here, and logs them as Django would.
        logging.getLogger(f"django.security.{type(exc).__name__}").warning("%s", exc)
        status_code, body = refused_request(exc)
        return Response(body, status=status_code)
    if isinstance(exc, JobRefused):
        status_code, body, headers = refusal_payload(exc)
        return Response(body, status=status_code, headers=headers)
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return Response(
            error_body(ErrorCode.VALIDATION_ERROR, "; ".join(flatten_errors(fields)), fields=fields),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, PayloadTooLarge):
        return Response(error_body(ErrorCode.PAYLOAD_TOO_LARGE, str(exc.detail)), status=413)
    if isinstance(exc, exceptions.ParseError):
        if "multipart" in (getattr(context.get("request"), "content_type", "") or ""):
            return Response(error_body(ErrorCode.BAD_REQUEST, f"the multipart body could not be read: {exc.detail}"), status=400)
        return Response(error_body(ErrorCode.INVALID_JSON, f"the request body is not valid JSON: {exc.detail}"), status=400)
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return Response(
            error_body(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send the request body as JSON (Content-Type: application/json)"
                       + (" or as multipart/form-data with an image file" if _accepts_multipart(context) else "")),
            status=415,
        )
    if isinstance(exc, exceptions.MethodNotAllowed):
        return Response(error_body(ErrorCode.METHOD_NOT_ALLOWED, str(exc.detail)), status=405)
    response = drf_exception_handler(exc, context)
    if response is not None:
        # DRF's own codes (not_authenticated, throttled, ...) are in ErrorCode; Django's Http404
        # and PermissionDenied carry none and take the code of their status.
        code = ErrorCode.__members__.get(str(getattr(exc, "default_code", "")).upper(),
                                         _CODE_OF_STATUS.get(response.status_code, ErrorCode.BAD_REQUEST))
        shaped = Response(error_body(code, str(getattr(exc, "detail", exc))), status=response.status_code)
        for header in ("WWW-Authenticate", "Retry-After"):
            if header in response:
                shaped[header] = response[header]
        return shaped
    ref = uuid.uuid4().hex[:12]
    logger.exception("unhandled error (ref %s)", ref, exc_info=exc)
    return Response(error_body(ErrorCode.INTERNAL_ERROR, f"internal error (ref {ref})"), status=500)


def handler404(request, exception=None):
    return JsonResponse(error_body(ErrorCode.NOT_FOUND, "no such endpoint"), status=404)


def handler500(request):
    # Called inside the except block of whatever failed outside a DRF view (middleware, the
    # admin, a session lookup): a database that went away is a 503 there too.
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        return database_unavailable()
    return JsonResponse(error_body(ErrorCode.INTERNAL_ERROR, "internal error"), status=500)


def handler400(request, exception=None):
    if isinstance(exception, SuspiciousOperation):  # e.g. the job page's or the admin's form
        status_code, body = refused_request(exception)
        return JsonResponse(body, status=status_code)
    return JsonResponse(error_body(ErrorCode.BAD_REQUEST, "bad request"), status=400)


class NulByteGuardMiddleware:
    """400 for a NUL byte in the URL (path or query string), a header or a cookie, before any
    view or session lookup reads them.

    Postgres refuses NUL in text, so an id, a page, a filter or a session key carrying one
    (``/jobs/%00/cancel``, the admin's ``?owner=%00``, ``Cookie: sessionid="\\000..."``) would
    fail in the database as a 500 wherever nothing checked it first. This one guard answers them
    all: the API, the job page and the admin. (Bodies are checked by their serializers and forms:
    DRF's and Django's text fields refuse NUL.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        where = _nul_byte_in(request)
        if where is not None:
            return JsonResponse(error_body(ErrorCode.BAD_REQUEST, f"{where} holds a NUL byte (%00)"), status=400)
        return self.get_response(request)


def _nul_byte_in(request) -> str | None:
    """Which part of the request holds a NUL byte, or None."""
    query = request.GET  # a query over DATA_UPLOAD_MAX_NUMBER_FIELDS raises here: handler400
    if "\x00" in request.path or any("\x00" in key or any("\x00" in value for value in values)
                                     for key, values in query.lists()):
        return "the URL"
    if any("\x00" in value for name, value in request.META.items()
           if name.startswith("HTTP_") and isinstance(value, str)):
        return "a header"
    # A quoted cookie's "\000" is unquoted to a NUL: the header itself holds none.
    if any("\x00" in name or "\x00" in value for name, value in request.COOKIES.items()):
        return "a cookie"
    return None


class BodySizeLimitMiddleware:
    """413 for bodies over DATA_UPLOAD_MAX_MEMORY_SIZE.

    DRF's parsers read the request stream directly, so Django's own body limit never fires
    for API views; the declared length is checked here before any view runs. A body sent with
    ``Transfer-Encoding: chunked`` declares no length (Django would read it as empty): it is
    read here, at most one byte past the limit, and handed on as an ordinary body.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request.META.get("CONTENT_TYPE", "").lower().startswith("multipart/form-data"):
            limit = settings.MAX_UPLOAD_REQUEST_BYTES  # one image upload (IMAGE_MAX_BYTES) and the fields
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and not request.META.get("CONTENT_LENGTH"):
            body = request.META["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return _too_large(f"the chunked request body is over {limit} bytes")
            request._stream = io.BytesIO(body)
            request.META["CONTENT_LENGTH"] = str(len(body))
            return self.get_response(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(error_body(ErrorCode.BAD_REQUEST, "invalid Content-Length"), status=400)
        if limit is not None and length > limit:
            return _too_large(f"the request body is {length} bytes; the limit is {limit}")
        return self.get_response(request)


def _too_large(message: str) -> JsonResponse:
    return JsonResponse(error_body(ErrorCode.PAYLOAD_TOO_LARGE, message), status=413)


def _accepts_multipart(context) -> bool:
    view = context.get("view")
    return any("multipart" in parser.media_type for parser in getattr(view, "parser_classes", ()))
