"""Shared OpenAPI pieces: the error envelope every 4xx uses."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorBody",
            {
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.JSONField(allow_null=True),
            },
        )
    },
)

_DESCRIPTIONS = {
    400: "Invalid request; `error.details` names each bad field.",
    401: "No key, or the key is not valid.",
    403: "The key may not do this (e.g. a write key reading profiles, or a disallowed origin).",
    404: "Not found.",
    409: "Conflict.",
    413: "Body too large.",
}


def error_responses(*codes: int) -> dict[int, Any]:
    return {
        c: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS.get(c, "")) for c in codes
    }


class SourceKeyAuthScheme(OpenApiAuthenticationExtension):
    target_class = "cdp.auth.SourceKeyAuthentication"
    name = "sourceKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A source's write key (`wk_…`, browser-safe) or secret key (`sk_…`, server only).",
        }
