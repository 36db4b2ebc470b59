"""Segment-compatible tracking API (DESIGN.md §4): /v1/batch, /v1/track, … and the
analytics.js settings, so a shop on analytics.js, analytics-python or RudderStack's SDKs
only changes its host. Thin: parse, translate (profiles.segment), call events_ingest."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from typing import IO, Any, Literal

import orjson
from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from pydantic import BaseModel, ConfigDict, Field
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.auth import HasWriteKey, address_check, credential_admit, origin_allowed
from cdp.errors import NotFound, PayloadTooLarge, ValidationFailed
from cdp.openapi import error_responses
from cdp.renderers import FastJSONRenderer
from profiles.api import ingest_context
from profiles.ingestion import events_ingest
from profiles.segment import segment_batch_translate, segment_rejected
from profiles.selectors import SourceCredential, source_credential

# --- Bodies: JSON or text/plain, optionally gzip ---------------------------------------

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_GZIP_MAX_MEMBERS = 64


def _inflate(raw: bytes, limit: int, wbits: int) -> bytes:
    """Decompress at most `limit` bytes: a small bomb cannot expand past the limit in
    memory. Follows gzip's concatenated members."""
    # Pieces joined once at the end: appending to one bytes object copies it per gzip
    # member, and a body of 20,000 tiny members then costs half a second of CPU.
    pieces: list[bytes] = []
    size = 0
    data = raw
    for _member in range(_GZIP_MAX_MEMBERS):
        decoder = zlib.decompressobj(wbits)
        try:
            piece = decoder.decompress(data, limit + 1 - size)
        except zlib.error as exc:
            raise exceptions.ParseError(f"The body is not valid {_name(wbits)}: {exc}") from exc
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            raise PayloadTooLarge(
                f"The decompressed body is larger than the limit of {limit} bytes.",
                details={"body": [f"at most {limit} bytes, uncompressed"]},
            )
        if not decoder.eof:
            raise exceptions.ParseError(f"The body is truncated {_name(wbits)}.")
        data = decoder.unused_data
        if not data or wbits != _GZIP_WBITS:
            return b"".join(pieces)
    # Each member costs a decoder and a copy of the rest of the body; senders use one.
    raise exceptions.ParseError(f"The body has more than {_GZIP_MAX_MEMBERS} gzip members.")


def _name(wbits: int) -> str:
    return "gzip" if wbits == _GZIP_WBITS else "deflate"


class SegmentJSONParser(BaseParser):
    """JSON, gzip-encoded or not, with the view's limit (`max_body_bytes`) applied to the
    body both as sent and decompressed."""

    media_type = "application/json"

    def parse(
        self,
        stream: IO[Any] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        context = parser_context or {}
        limit = int(getattr(context.get("view"), "max_body_bytes", settings.CDP["MAX_BATCH_BYTES"]))
        request = context.get("request")
        meta = request.META if request is not None else {}
        try:
            declared = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        too_large = {"body": [f"at most {limit} bytes"]}
        if declared > limit:
            raise PayloadTooLarge(
                f"Request body is {declared} bytes; the limit is {limit}.", details=too_large
            )
        if stream is None:
            raise exceptions.ParseError("Malformed JSON: the body is empty.")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(
                f"Request body is larger than the limit of {limit} bytes.", details=too_large
            )
        encoding = str(meta.get("HTTP_CONTENT_ENCODING") or "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            raw = _inflate(raw, limit, _GZIP_WBITS)
        elif encoding == "deflate":
            raw = _inflate(raw, limit, zlib.MAX_WBITS)
        elif encoding not in ("", "identity"):
            raise exceptions.UnsupportedMediaType(
                encoding,
                detail=f"Content-Encoding {encoding!r} is not supported; send gzip or none.",
            )
        if request is not None:
            # As cdp.parsers does: the view screens big or NUL-carrying bodies per message.
            request._request.cdp_body_bytes = len(raw)
            request._request.cdp_body_has_nul = b"\\u0000" in raw
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(f"Malformed JSON: {exc}") from exc


class SegmentPlainJSONParser(SegmentJSONParser):
    """analytics.js and navigator.sendBeacon send JSON as text/plain (no CORS preflight)."""

    media_type = "text/plain"


# --- The write key: basic-auth user, Bearer, or `writeKey` in the body -------------------


class SegmentKeyAuthentication(BaseAuthentication):
    """Segment's ways of sending the write key. Secret keys work too (trusted, as on
    /api/v1/events); write keys follow cdp.auth's allowed-origin rules."""

    def authenticate(self, request: Request) -> tuple[Any, SourceCredential] | None:
        raw = self._header_key(request)
        if raw is None:
            body = request.data  # parses: sendBeacon and text/plain calls have no header
            key = body.get("writeKey") if isinstance(body, dict) else None
            if key is None:
                return None
            if not isinstance(key, str):
                raise exceptions.AuthenticationFailed("writeKey must be a string.")
            raw = key
        if raw:
            address_check(request, raw)
        cred = source_credential(raw_key=raw) if raw else None
        if cred is None:
            raise exceptions.AuthenticationFailed("The write key is not valid or was revoked.")
        return credential_admit(cred, request._request)

    @staticmethod
    def _header_key(request: Request) -> str | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        scheme = header[0].lower()
        if len(header) != 2 or scheme not in (b"basic", b"bearer"):
            raise exceptions.AuthenticationFailed(
                "Authorization must be 'Basic base64(<write key>:)' or 'Bearer <key>'."
            )
        try:
            if scheme == b"bearer":
                return header[1].decode("ascii")
            user, _, password = (
                base64.b64decode(header[1], validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise exceptions.AuthenticationFailed("The Authorization header is malformed.") from exc
        # Segment puts the key in the user name; some tools put it in the password.
        return user or password

    def authenticate_header(self, request: Request) -> str:
        # Not "Basic": a Basic challenge makes browsers pop up a login dialog.
        return 'Bearer realm="segment"'


class SegmentKeyAuthScheme(OpenApiAuthenticationExtension):
    target_class = "profiles.segment_api.SegmentKeyAuthentication"
    name = "segmentWriteKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Segment's way: the write key as the basic-auth user name and an "
            "empty password. `writeKey` in the body and `Authorization: Bearer <key>` work "
            "too; a secret key is accepted server side.",
        }


# --- OpenAPI shapes (documentation only: the translation is profiles.segment) -----------


class SegmentMessage(BaseModel):
    """A Segment message as analytics.js, analytics-python and RudderStack send it. Keys
    this API has no use for (integrations, _metadata, channel, …) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    type: Literal["track", "identify", "page", "screen", "alias", "group"] | None = Field(
        default=None, description="Required in a batch; implied by the path otherwise."
    )
    event: str | None = Field(default=None, description="track: the event's name.")
    name: str | None = Field(default=None, description="page/screen: the page's name.")
    userId: str | None = None
    anonymousId: str | None = None
    messageId: str | None = Field(
        default=None,
        description="Makes a retry idempotent: a messageId already stored for "
        "the source is not stored again.",
    )
    previousId: str | None = Field(default=None, description="alias: the former id.")
    groupId: str | None = Field(default=None, description="group: stored as properties.group_id.")
    userHash: str | None = Field(
        default=None,
        description="HMAC-SHA256(identity secret, userId), when the source verifies user ids.",
    )
    timestamp: str | None = Field(default=None, description="When it happened (ISO 8601).")
    sentAt: str | None = Field(
        default=None, description="When the library sent it; corrects the client's clock."
    )
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


class SegmentBatch(BaseModel):
    """Up to 500 messages and 500 KB; each message at most 32 KB."""

    model_config = ConfigDict(extra="allow")

    batch: list[SegmentMessage]
    sentAt: str | None = Field(default=None, description="For messages without their own.")
    context: dict[str, Any] | None = Field(
        default=None, description="Merged under every message's context."
    )
    writeKey: str | None = Field(default=None, description="When not sent as basic auth.")


SegmentResult = inline_serializer(
    "SegmentResult",
    {
        "success": serializers.BooleanField(),
        "accepted": serializers.IntegerField(),
        "duplicates": serializers.IntegerField(),
        "dropped": serializers.IntegerField(),
        "rejected": inline_serializer(
            "SegmentRejectedMessage",
            {"index": serializers.IntegerField(), "errors": serializers.DictField()},
            many=True,
        ),
    },
)

# --- Views --------------------------------------------------------------------------------


class _SegmentIngestApi(APIView):
    authentication_classes = [SegmentKeyAuthentication]
    permission_classes = [HasWriteKey]
    parser_classes = [SegmentJSONParser, SegmentPlainJSONParser]
    renderer_classes = [FastJSONRenderer]
    max_body_bytes = settings.CDP["MAX_BATCH_BYTES"]

    def _ingest(
        self, request: Request, messages: list[Any], *, type_: str | None, body: dict[str, Any]
    ) -> Response:
        cdp = settings.CDP
        body_bytes = int(getattr(request._request, "cdp_body_bytes", 0))
        has_nul = bool(getattr(request._request, "cdp_body_has_nul", True))
        big = body_bytes > cdp["MAX_EVENT_BYTES"]
        translated = segment_batch_translate(
            messages,
            type_=type_,
            sent_at=body.get("sentAt") if type_ is None else None,
            context=body.get("context") if type_ is None else None,
            max_message_bytes=cdp["MAX_EVENT_BYTES"] if big else None,
        )
        ctx = ingest_context(request, browser_user_agent=True)
        result = events_ingest(ctx=ctx, payloads=translated.events, screen=big or has_nul)
        rejected = segment_rejected(translated, result.rejected)
        answer = {
            "success": True,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "dropped": sum(result.dropped.values()),
            "rejected": rejected,
        }
        if result.accepted == 0 and result.duplicates == 0 and not result.dropped:
            if type_ is not None:
                errors = rejected[0]["errors"]
                field, problems = next(iter(errors.items()))
                raise ValidationFailed(f"{field}: {problems[0]}", details=errors)
            raise ValidationFailed(
                "No message in the batch is valid; see details.",
                details={k: v for k, v in answer.items() if k != "success"},
            )
        return Response(answer)


def _body_object(request: Request) -> dict[str, Any]:
    body = request.data
    if not isinstance(body, dict):
        raise ValidationFailed(
            "The body must be a JSON object.", details={"body": ["must be a JSON object"]}
        )
    return body


class SegmentBatchApi(_SegmentIngestApi):
    @extend_schema(
        summary="Segment: a batch of messages",
        description=(
            "Segment's batch call, as analytics-python, RudderStack's SDKs and analytics.js "
            "(batching) send it: the write key as basic-auth user, `writeKey` in the body, "
            "or Bearer; JSON or text/plain, optionally `Content-Encoding: gzip`. Valid "
            "messages are stored even when others are rejected (listed by index, in "
            "Segment's field names); 400 only when none is valid. `timestamp` is shifted by "
            "received_at − `sentAt` (the batch's `sentAt` for messages without their own). "
            "See docs/segment.md."
        ),
        request={"application/json": SegmentBatch, "text/plain": SegmentBatch},
        responses={200: SegmentResult, **error_responses(400, 401, 403, 413)},
        tags=["segment"],
    )
    def post(self, request: Request) -> Response:
        body = _body_object(request)
        messages = body.get("batch")
        if not isinstance(messages, list):
            raise ValidationFailed(
                "batch: must be a list of messages", details={"batch": ["must be a list"]}
            )
        if not messages:
            raise ValidationFailed(
                "batch: is empty", details={"batch": ["must hold at least one message"]}
            )
        limit = settings.CDP["MAX_BATCH_EVENTS"]
        if len(messages) > limit:
            raise PayloadTooLarge(
                f"batch: {len(messages)} messages; the limit is {limit}",
                details={"batch": [f"at most {limit} messages"]},
            )
        return self._ingest(request, messages, type_=None, body=body)


class SegmentMessageApi(_SegmentIngestApi):
    """One message; its type is the path's (/v1/track is a track, whatever the body says)."""

    message_type = "track"

    @extend_schema(
        summary="Segment: one message (its type is the path's)",
        description=(
            "Segment's single calls, as analytics.js sends them. The same keys, limits "
            "(32 KB), clock-skew correction and deduplication as `/v1/batch`. "
            "See docs/segment.md."
        ),
        request={"application/json": SegmentMessage, "text/plain": SegmentMessage},
        responses={200: SegmentResult, **error_responses(400, 401, 403, 413)},
        tags=["segment"],
    )
    def post(self, request: Request) -> Response:
        body = _body_object(request)
        limit = settings.CDP["MAX_EVENT_BYTES"]
        if int(getattr(request._request, "cdp_body_bytes", 0)) > limit:
            raise PayloadTooLarge(
                f"A message may be at most {limit} bytes.",
                details={"body": [f"at most {limit} bytes"]},
            )
        return self._ingest(request, [body], type_=self.message_type, body=body)


# analytics.js posts to /v1/b, /v1/t, …: the same calls, left out of the schema.
@extend_schema_view(post=extend_schema(exclude=True))
class SegmentBatchShortApi(SegmentBatchApi):
    pass


@extend_schema_view(post=extend_schema(exclude=True))
class SegmentMessageShortApi(SegmentMessageApi):
    pass


SettingsOutput = inline_serializer(
    "SegmentSettings",
    {
        "integrations": serializers.DictField(
            help_text='`{"Segment.io": {"apiKey", "apiHost", "protocol", …}}`'
        ),
        "plan": serializers.DictField(),
        "metrics": serializers.DictField(),
    },
)


class SegmentSettingsApi(APIView):
    """What analytics.js loads from its CDN (`<cdnURL>/v1/projects/<writeKey>/settings`)
    before it sends anything: this server as the `Segment.io` destination."""

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    renderer_classes = [FastJSONRenderer]

    @extend_schema(
        summary="Segment: analytics.js settings for a write key",
        description=(
            "Load analytics.js with `cdnURL` set to this server and it sends here. "
            "404 for an unknown or revoked write key. See docs/segment.md."
        ),
        parameters=[OpenApiParameter("write_key", str, OpenApiParameter.PATH)],
        responses={200: SettingsOutput, **error_responses(404)},
        tags=["segment"],
    )
    def get(self, request: Request, write_key: str) -> Response:
        cred = source_credential(raw_key=write_key)
        if cred is None or cred.kind != "write":
            raise NotFound("No source has this write key.")
        django_request = request._request
        if origin_allowed(cred, django_request):
            django_request.cdp_cors_allowed = True  # type: ignore[attr-defined]
        integration: dict[str, Any] = {
            "apiKey": write_key,
            "apiHost": f"{request.get_host()}/v1",
            "protocol": "https" if request.is_secure() else "http",
            "addBundledMetadata": False,
            "unbundledIntegrations": [],
        }
        answer = {
            "integrations": {"Segment.io": integration},
            "plan": {
                "track": {"__default": {"enabled": True, "integrations": {}}},
                "identify": {"__default": {"enabled": True}},
                "group": {"__default": {"enabled": True}},
            },
            # analytics.js would otherwise report its own metrics to Segment.
            "metrics": {"sampleRate": 0},
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "remotePlugins": [],
            "legacyVideoPluginsEnabled": False,
        }
        response = Response(answer)
        response["Cache-Control"] = "max-age=60"
        response["Vary"] = "Origin"
        return response
