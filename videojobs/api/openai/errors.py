"""Errors under /v1 in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

Every error this service answers (a refusal, a validation error, a 401, a 404 for an unknown
path, the body-size and NUL-byte guards, a database outage, an unexpected 500) is first shaped
by videojobs.api.errors as {"error": CODE, "message": ..., "fields": ...}; the middleware here
rewrites that body for requests under /v1/, keeping the status and its headers (Retry-After,
WWW-Authenticate), which are what the SDK maps to its typed exceptions (BadRequestError,
AuthenticationError, PermissionDeniedError, NotFoundError, ConflictError, RateLimitError,
InternalServerError). The original endpoints keep their own shape.
"""
from __future__ import annotations

import json
from typing import Any

from videojobs.errors import ErrorCode

V1_PREFIX = "/v1/"

# ErrorCode -> OpenAI's error type. The code sent is the ErrorCode in lower case.
_INVALID = "invalid_request_error"
ERROR_TYPES: dict[ErrorCode, str] = {
    **{code: _INVALID for code in ErrorCode},
    ErrorCode.NOT_AUTHENTICATED: "authentication_error",
    ErrorCode.AUTHENTICATION_FAILED: "authentication_error",
    ErrorCode.PERMISSION_DENIED: "permission_error",
    ErrorCode.THROTTLED: "rate_limit_error",
    ErrorCode.QUEUE_FULL: "rate_limit_error",
    ErrorCode.OWNER_LIMIT: "rate_limit_error",
    ErrorCode.INTERNAL_ERROR: "server_error",
    ErrorCode.DATABASE_UNAVAILABLE: "server_error",
}
# A code another part of the service adds later still gets a type, from its status.
_TYPE_OF_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def openai_error(body: dict[str, Any], status: int) -> dict[str, Any]:
    """Our error body as OpenAI's; ``param`` is the first field it names (None if none)."""
    code = str(body.get("error", ErrorCode.BAD_REQUEST))
    fields = body.get("fields")
    param = next(iter(fields), None) if isinstance(fields, dict) else None
    try:
        kind = ERROR_TYPES[ErrorCode(code)]
    except ValueError:
        kind = _TYPE_OF_STATUS.get(status, "server_error" if status >= 500 else _INVALID)
    return {"error": {"message": str(body.get("message", "")), "type": kind,
                      "param": None if param == "non_field_errors" else param, "code": code.lower()}}


class OpenAIErrorShapeMiddleware:
    """Rewrites the JSON error bodies of /v1/ responses into OpenAI's shape (see the module)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(V1_PREFIX) or response.status_code < 400 or response.streaming:
            return response
        if not response.get("Content-Type", "").startswith("application/json"):
            return response
        try:
            body = json.loads(response.content)
        except ValueError:
            return response
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            response.content = json.dumps(openai_error(body, response.status_code)).encode()
            if response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
        return response
