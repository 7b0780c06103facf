"""Every error code this service speaks, and the one exception its services raise.

The API's error bodies, the job page, the admin, webhooks (a failed job's ``error_code``),
the daemon's outcomes and the sweeps all take their codes from :class:`ErrorCode`; nothing
else spells one. A service that refuses a request raises :class:`JobRefused` (or one of its
subclasses below), carrying the code, the HTTP status, the message and, optionally, the
field it is about. :func:`refusal_payload` turns one into a status, a body and headers: the
API's exception handler, the job page and the admin all answer with it.

Pure Python on purpose: the daemon imports it too.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # The request itself (400, 404, 405, 410, 413, 415).
    VALIDATION_ERROR = "VALIDATION_ERROR"
    INVALID_JSON = "INVALID_JSON"
    BAD_REQUEST = "BAD_REQUEST"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_FOUND = "NOT_FOUND"
    GONE = "GONE"
    # Who is asking (DRF's own codes, upper-cased: 401, 403, 406, 429).
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
    THROTTLED = "THROTTLED"
    # Admission and the job's state (409, 429).
    QUEUE_FULL = "QUEUE_FULL"
    OWNER_LIMIT = "OWNER_LIMIT"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    WEBHOOKS_DISABLED = "WEBHOOKS_DISABLED"
    WEBHOOK_URL_INVALID = "WEBHOOK_URL_INVALID"
    ALREADY_FINISHED = "ALREADY_FINISHED"
    NOT_FINISHED = "NOT_FINISHED"
    INPUT_GONE = "INPUT_GONE"
    NO_VIDEO = "NO_VIDEO"  # a video's content asked of a job that ended without one (/v1)
    # The input image (a refused upload, or a job that ends before the daemon sees it).
    IMAGE_HTTP_ERROR = "IMAGE_HTTP_ERROR"
    IMAGE_NOT_AN_IMAGE = "IMAGE_NOT_AN_IMAGE"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    IMAGE_URL_FORBIDDEN = "IMAGE_URL_FORBIDDEN"
    IMAGE_URL_INVALID = "IMAGE_URL_INVALID"
    IMAGE_TIMEOUT = "IMAGE_TIMEOUT"
    IMAGE_UNREACHABLE = "IMAGE_UNREACHABLE"
    IMAGE_TOO_MANY_REDIRECTS = "IMAGE_TOO_MANY_REDIRECTS"
    # How a claimed job fails (a job's error_code; the daemon and the sweeps write them).
    TIMEOUT = "TIMEOUT"
    WORKER_LOST = "WORKER_LOST"
    INPUT_MISSING = "INPUT_MISSING"
    INFERENCE_ERROR = "INFERENCE_ERROR"
    OUTPUT_UNWRITABLE = "OUTPUT_UNWRITABLE"
    DISK_FULL = "DISK_FULL"
    # A queued job whose LoRA adapters no loaded worker holds, past LORA_WAIT_SECONDS (a sweep).
    LORA_UNAVAILABLE = "LORA_UNAVAILABLE"
    # A job a client cancelled (the /v1 Video object's error.code; the original API says Cancelled).
    CANCELLED = "CANCELLED"
    # The server.
    INTERNAL_ERROR = "INTERNAL_ERROR"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"


class JobRefused(Exception):
    """A request the service will not carry out, and why.

    ``code`` names it for machines, ``message`` for people (no server paths), ``status`` is
    the HTTP status an API answers with, ``field`` the request field it is about (None when
    it is about the request as a whole). ``retry_after`` (seconds) becomes a Retry-After
    header; ``extra`` adds fields to the API's error body."""

    code: ErrorCode = ErrorCode.BAD_REQUEST
    status: int = 400
    field: str | None = None

    def __init__(self, message: str, *, code: ErrorCode | None = None, status: int | None = None,
                 field: str | None = None, retry_after: int | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = ErrorCode(code)
        if status is not None:
            self.status = status
        if field is not None:
            self.field = field
        self.retry_after = retry_after
        self.extra = dict(extra or {})


class JobNotFound(JobRefused):
    code, status = ErrorCode.NOT_FOUND, 404

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no job with requestId {request_id!r}")
        self.request_id = request_id


class QueueFull(JobRefused):
    code, status = ErrorCode.QUEUE_FULL, 429

    def __init__(self, unfinished: int, limit: int, *, retry_after: int) -> None:
        super().__init__(f"the server is busy ({unfinished} unfinished jobs, limit {limit}); retry later",
                         retry_after=retry_after, extra={"detail": "服务器繁忙，请稍后重试"})
        self.unfinished = unfinished
        self.limit = limit


class OwnerLimit(JobRefused):
    """One client's share: its unfinished jobs, or its submits in the last minute."""

    code, status = ErrorCode.OWNER_LIMIT, 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)


class IdempotencyConflict(JobRefused):
    code, status = ErrorCode.IDEMPOTENCY_CONFLICT, 409

    def __init__(self, job: Any) -> None:
        super().__init__(f"the Idempotency-Key was used for job {job.request_id} with a different request")
        self.job = job


class JobAlreadyFinished(JobRefused):
    code, status = ErrorCode.ALREADY_FINISHED, 409

    def __init__(self, job: Any) -> None:
        super().__init__(f"the job already ended as {job.status}")
        self.job = job


class JobNotFinished(JobRefused):
    """An operator action meant for a finished job was asked of one still queued or running."""

    code, status = ErrorCode.NOT_FINISHED, 409

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {job.request_id} is still {job.status}; cancel it first")
        self.job = job


class InputGone(JobRefused):
    """A job to retry has neither its stored input image nor an image_url to fetch again."""

    code, status = ErrorCode.INPUT_GONE, 409


class WebhooksDisabled(JobRefused):
    """A webhook_url was given but this server has no WEBHOOK_SECRET to sign with."""

    code, status = ErrorCode.WEBHOOKS_DISABLED, 400


class WebhookURLError(JobRefused):
    """The webhook_url may not be used (not http(s), unresolvable, or not a public address)."""

    code, status, field = ErrorCode.WEBHOOK_URL_INVALID, 400, "webhook_url"


class UnknownLora(JobRefused):
    """A job asks for LoRA adapters that no inference worker holds: names them and lists those held."""

    code, status, field = ErrorCode.VALIDATION_ERROR, 400, "loras"

    def __init__(self, unknown: list[str], available: list[str]) -> None:
        listed = ", ".join(available) if available else "none (no inference worker holds a LoRA adapter)"
        super().__init__(f"unknown LoRA {', '.join(repr(name) for name in unknown)}; available: {listed}",
                         extra={"available_loras": list(available)})
        self.unknown = list(unknown)


class ImageInputError(JobRefused):
    """The job's input image could not be used.

    ``reason`` is a sentence a user can act on (no server paths, no tracebacks); ``code`` is
    one of the IMAGE_* codes. ``field`` is "image" for an upload and "image_url" for a fetch."""

    field = "image_url"

    def __init__(self, reason: str, code: ErrorCode | str, field: str | None = None) -> None:
        super().__init__(reason, code=ErrorCode(code), field=field)
        self.reason = reason

    def __reduce__(self):  # keep it picklable (task queues store exceptions)
        return (type(self), (self.reason, self.code, self.field))

    def __repr__(self) -> str:
        return f"ImageInputError(reason={self.reason!r}, code={str(self.code)!r})"


def error_body(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    """The API's one error shape: {"error": CODE, "message": text, ...}."""
    return {"error": str(ErrorCode(code)), "message": message, **extra}


def refusal_payload(refused: JobRefused) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, error body, headers) for a refusal: the API, the page and the admin answer with it.

    A refusal about one field (an unusable upload, a webhook_url) reads as the serializer's own
    errors do: VALIDATION_ERROR, naming the field, with ``fields`` for a form to show beside it."""
    headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after is not None else {}
    if refused.field is not None:
        body = error_body(ErrorCode.VALIDATION_ERROR, f"{refused.field}: {refused.message}",
                          fields={refused.field: [refused.message]}, **refused.extra)
    else:
        body = error_body(refused.code, refused.message, **refused.extra)
    return refused.status, body, headers


def refusal_sentence(refused: JobRefused) -> str:
    """The refusal for a person (the job page, the admin): one sentence, with when to try again."""
    _, body, headers = refusal_payload(refused)
    text = body["message"]
    if "Retry-After" in headers:
        text += f" (try again in {headers['Retry-After']} s)"
    return text[:1].upper() + text[1:] + "."
