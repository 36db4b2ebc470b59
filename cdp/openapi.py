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


def nullable_as_any_of(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: write OAS 3.1 nullables as `anyOf: [X, null]`.

    drf-spectacular writes them as `oneOf`, which rejects `null` whenever X accepts it too
    (a JSONField is `{}`): an `"details": null` error would not match its own schema.
    """

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            alternatives = node.get("oneOf")
            if (
                isinstance(alternatives, list)
                and len(alternatives) == 2
                and {"type": "null"} in alternatives
            ):
                node["anyOf"] = node.pop("oneOf")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(result)
    return result


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending again.",
        "schema": {"type": "integer"},
    }
}
_EVERYWHERE = {
    "429": "Rate limited (per key or per client address); wait `Retry-After` seconds.",
    "503": "The database is unavailable or busy; nothing of the request was stored. "
    "Send it again after `Retry-After` seconds (message ids make it safe).",
}


def throttled_and_unavailable(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: the two answers any keyed operation may give whatever its
    view — 429 from the rate limits (cdp.throttles) and 503 when PostgreSQL is away
    (cdp.errors) — both with the error envelope and a Retry-After header. The health
    probes (tag `operations`) are never throttled and document their own 503."""
    ref = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "operations" in operation.get("tags", []):
                continue
            responses = operation.setdefault("responses", {})
            for code, description in _EVERYWHERE.items():
                responses.setdefault(
                    code,
                    {
                        "description": description,
                        "headers": _RETRY_AFTER,
                        "content": {"application/json": {"schema": ref}},
                    },
                )
    return result
