"""How the OpenAPI schema describes our authentication and the error answers operations share
(imported when the app is ready)."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from videojobs.errors import ErrorCode


class BearerAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "videojobs.api.auth.BearerAPIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `manage.py create_api_key` or the admin: `Authorization: Bearer <key>`. "
            "Required when API_KEYS_REQUIRED (production); a logged-in session also works.",
        }


class OpenAIBearerScheme(OpenApiAuthenticationExtension):
    target_class = "videojobs.api.openai.auth.OpenAIBearerAuthentication"
    name = "openaiBearer"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The same API keys as the rest of the API, as the openai SDK sends them (api_key=<key>). "
            "Where API_KEYS_REQUIRED is off, a token that is not of a key's shape (an SDK's placeholder such as "
            "\"EMPTY\") is an anonymous caller; an unknown key of that shape is a 401.",
        }


# The error answers that operations share, as videojobs.api.errors shapes them (the README's
# "Errors" table): with them the schema names every status a client can get, and the fuzzing
# test (tests/test_api_fuzz.py) can hold each response to its operation's documented ones.
_ANY_OPERATION = {
    "401": f"{ErrorCode.NOT_AUTHENTICATED}: no API key where one is required (API_KEYS_REQUIRED); "
           f"{ErrorCode.AUTHENTICATION_FAILED}: an unknown, revoked or expired key",
}
_WITH_INPUT = {
    "400": f"{ErrorCode.VALIDATION_ERROR} (each bad field named), {ErrorCode.INVALID_JSON} or {ErrorCode.BAD_REQUEST}",
}
_WITH_BODY = {
    "413": f"{ErrorCode.PAYLOAD_TOO_LARGE}: the body is over MAX_REQUEST_BYTES",
    "415": f"{ErrorCode.UNSUPPORTED_MEDIA_TYPE}: the body is not in a documented media type",
}


def document_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: the shared error responses on each operation (401
    everywhere; 400 where a query or a body is read; 413 and 415 where a body is), unless the
    operation documents that status itself."""
    for path, methods in result.get("paths", {}).items():
        # /v1 answers errors in OpenAI's shape (videojobs.api.openai.errors).
        schema = "OpenAIError" if path.startswith("/v1/") else "Error"
        for operation in methods.values():
            errors = dict(_ANY_OPERATION)
            if "requestBody" in operation or any(p.get("in") == "query" for p in operation.get("parameters", [])):
                errors.update(_WITH_INPUT)
            if "requestBody" in operation:
                errors.update(_WITH_BODY)
            responses = operation.setdefault("responses", {})
            for code, description in errors.items():
                # A fresh dict each time: a shared one would be written as a YAML alias.
                content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
                responses.setdefault(code, {"content": content, "description": description})
    return result
