"""How the OpenAPI schema describes our authentication (imported when the app is ready)."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
