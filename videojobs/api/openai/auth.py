"""Bearer keys on /v1, as the openai SDK sends them (``Authorization: Bearer <key>``).

The SDK always sends a key, so a client of a server without API_KEYS_REQUIRED sends a
placeholder ("EMPTY", "sk-no-key", ...). Where keys are optional, a token that cannot be one
of ours (djangorestframework-api-key's ``<8 characters>.<32 characters>``) is such a
placeholder and the caller is anonymous, as a caller without the header is on /video/*. A token
of a key's shape that is unknown, revoked or expired is a 401 everywhere; where keys are
required, so is every token that is not a valid key.
"""
from __future__ import annotations

import re

from django.conf import settings

from videojobs.api.auth import BearerAPIKeyAuthentication

KEY_SHAPE = re.compile(r"[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}")


class OpenAIBearerAuthentication(BearerAPIKeyAuthentication):
    def authenticate(self, request):
        keyword, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if (keyword.lower() == self.keyword.lower() and not settings.API_KEYS_REQUIRED
                and not KEY_SHAPE.fullmatch(token.strip())):
            return None  # an SDK's placeholder key where keys are optional: anonymous
        return super().authenticate(request)
