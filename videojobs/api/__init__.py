"""The REST API of the original contract: views by resource (jobs, videos, health, metrics), their
serializers, the one error handler, API-key authentication, the guarded JSON parser and the
OpenAPI extensions."""
