"""JSON parsing with orjson and a per-view body size limit (413, before parsing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from cdp.errors import PayloadTooLarge


def _body_limit(parser_context: Mapping[str, Any] | None) -> int:
    view = (parser_context or {}).get("view")
    return int(getattr(view, "max_body_bytes", None) or settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


class FastJSONParser(BaseParser):
    media_type = "application/json"

    def parse(
        self,
        stream: IO[Any] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = _body_limit(parser_context)
        request = (parser_context or {}).get("request")
        if request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {limit}.")
        if stream is None:
            raise ParseError("Malformed JSON: the body is empty.")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        if request is not None:
            # The events view needs the size; the stream cannot be read twice.
            request._request.cdp_body_bytes = len(raw)
            # JSON can only carry a NUL as the escape \u0000; PostgreSQL cannot store it.
            request._request.cdp_body_has_nul = b"\\u0000" in raw
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from exc


class PlainJSONParser(FastJSONParser):
    """Also accepts text/plain bodies: navigator.sendBeacon cannot set application/json
    without a CORS preflight, so browser SDKs send JSON as text/plain."""

    media_type = "text/plain"
